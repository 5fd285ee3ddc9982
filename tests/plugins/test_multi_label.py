"""The built-in multi-label-classification task: fine-tuned, exported and served over gRPC
with a real training process on the tiny BERT, plus its metrics checked by hand."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio
from tokenizers import Tokenizer

from edgetune.conformance import TaskConformance, build_tiny_bert
from edgetune.plugins.multi_label import MultiLabelClassification, tune_thresholds
from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc, models_pb2_grpc, server_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import models_pb2 as mpb
from edgetune.v1 import server_pb2 as spb

TASK = "multi-label-classification"
# Each keyword (a word the tiny tokenizer knows) adds its label to the text.
KEYWORDS = {"plot": "story", "acting": "cast", "fun": "fun"}
LABELS = sorted(KEYWORDS.values())
FILLER = ["the", "movie", "was", "film", "this", "it", "very", "is", "and", "to", "of"]
FAST = pb.Hyperparameters(
    epochs=8, learning_rate=3e-3, batch_size=4, max_length=16, early_stopping_patience=8
)


def tagged_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """Texts of filler words with one to three keywords; their labels, sorted."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        keywords = [k for k in KEYWORDS if rng.random() < 0.35]
        if not keywords:
            continue
        words = [*rng.sample(FILLER, 4), *keywords]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": sorted(KEYWORDS[k] for k in keywords)})
    return rows


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """A CSV file whose labels column holds each row's labels joined by ","."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["text", "labels"])
    writer.writerows([r["text"], ",".join(r["labels"])] for r in rows)
    return out.getvalue().encode()


def micro_f1(predicted: list[set[str]], actual: list[set[str]]) -> float:
    true_pos = sum(len(p & a) for p, a in zip(predicted, actual, strict=True))
    total = sum(len(p) + len(a) for p, a in zip(predicted, actual, strict=True))
    return 2 * true_pos / total if total else 0.0


def best_constant_f1(actual: list[set[str]]) -> float:
    """The micro F1 of the best predictor that answers the same label set for every text."""
    return max(
        micro_f1([set(subset)] * len(actual), actual)
        for size in range(len(LABELS) + 1)
        for subset in itertools.combinations(LABELS, size)
    )


@pytest.fixture
def finetuning(channel: aio.Channel) -> finetuning_pb2_grpc.FineTuningStub:
    return finetuning_pb2_grpc.FineTuningStub(channel)


async def upload(stub, data: bytes, filename: str = "train.jsonl") -> pb.Dataset:
    async def messages():
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(filename=filename, task=TASK))
        yield pb.UploadDatasetRequest(chunk=data)

    return await stub.UploadDataset(messages())


async def test_train_export_and_serve_several_labels_per_text(
    finetuning, channel, tiny_bert, settings
) -> None:
    train_rows, validation_rows, held_out = (
        tagged_rows(240, 0),
        tagged_rows(40, 1),
        tagged_rows(60, 2),
    )
    dataset = await upload(finetuning, jsonl(train_rows))
    counts = {label: sum(label in r["labels"] for r in train_rows) for label in LABELS}
    assert dict(dataset.label_counts) == counts and dataset.task == TASK
    validation = await upload(finetuning, csv_bytes(validation_rows), "validation.csv")
    assert validation.rows == 40 and validation.format == "csv"

    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task=TASK,
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            validation_dataset_id=validation.id,
            model_name="tags",
            hyperparameters=FAST,
            auto_promote=True,
        )
    )
    events = [e async for e in finetuning.WatchJob(pb.WatchJobRequest(id=job.id), timeout=300)]
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, [e.message for e in events])
    assert final.task == TASK
    evaluations = [e.metrics for e in events if "f1" in e.metrics]
    assert evaluations, [e.message for e in events]
    expected = {"accuracy", "precision", "recall", "f1", "macro_f1", "hamming_loss"}
    expected |= {f"f1/{label}" for label in LABELS} | {f"threshold/{label}" for label in LABELS}
    assert expected <= set(evaluations[-1])
    # The exported ONNX logits, through the serving tokenizer and a sigmoid, score as the
    # best torch checkpoint did (a decision or two of the 120 may flip on float rounding).
    assert abs(final.result.fp32_metrics["f1"] - final.metrics["f1"]) <= 0.03

    repository = ModelRepository(settings.home / "models")
    version = repository.resolve("tags", "1")
    assert version.manifest.task == TASK and version.manifest.labels == LABELS
    # Serving uses each label's threshold as tuned on the validation data of this job.
    thresholds = version.manifest.task_options["thresholds"]
    assert thresholds == {
        label: pytest.approx(final.result.fp32_metrics[f"threshold/{label}"]) for label in LABELS
    }
    config = json.loads((version.path / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"

    inference = inference_pb2_grpc.InferenceStub(channel)
    texts = [r["text"] for r in held_out]
    results = []
    for start in range(0, len(texts), settings.limits.max_batch_size):
        batch = texts[start : start + settings.limits.max_batch_size]
        reply = await inference.Classify(
            ipb.ClassifyRequest(model="tags", inputs=[ipb.Input(text=t) for t in batch])
        )
        results += reply.results
    actual = [set(r["labels"]) for r in held_out]
    predicted = [{s.label for s in result.labels if s.selected} for result in results]
    score, chance = micro_f1(predicted, actual), best_constant_f1(actual)
    assert score >= chance + 0.2, (score, chance)
    several = sum(len(a) >= 2 for a in actual)
    assert sum(len(p) >= 2 for p in predicted) >= several // 2 > 0  # several labels at once
    for result in results:
        scores = [s.score for s in result.labels]
        assert sorted(s.label for s in result.labels) == LABELS  # every label, ranked
        assert scores == sorted(scores, reverse=True)
        assert all(s.selected == (s.score >= thresholds[s.label]) for s in result.labels)

    top = await inference.Classify(
        ipb.ClassifyRequest(model="tags", inputs=[ipb.Input(text=texts[0])], top_k=2)
    )
    assert [s.label for s in top.results[0].labels] == [s.label for s in results[0].labels[:2]]

    tokenizer = Tokenizer.from_file(str(version.path / "tokenizer.json"))
    ids = tokenizer.encode(texts[0]).ids
    tokens = await inference.Classify(
        ipb.ClassifyRequest(model="tags", inputs=[ipb.Input(tokens=ipb.TokenIds(ids=ids))])
    )
    # Compared with the same text sent alone: in a batch it is padded to the batch's longest
    # text, and int8 activations are quantized over the whole padded tensor, which moves
    # scores by about 1e-4 with the batch's company.
    alone = await inference.Classify(
        ipb.ClassifyRequest(model="tags", inputs=[ipb.Input(text=texts[0])])
    )
    assert [s.label for s in tokens.results[0].labels] == [s.label for s in alone.results[0].labels]
    assert [s.score for s in tokens.results[0].labels] == pytest.approx(
        [s.score for s in alone.results[0].labels], abs=1e-6
    )

    with pytest.raises(aio.AioRpcError) as caught:
        await inference.Classify(
            ipb.ClassifyRequest(
                model="tags", inputs=[ipb.Input(text_pair=ipb.TextPair(text="a", text_pair="b"))]
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0]" in caught.value.details()

    info = await models_pb2_grpc.ModelsStub(channel).GetModel(mpb.GetModelRequest(name="tags"))
    assert info.task == TASK
    assert list(info.input_kinds) == ["text", "tokens"]
    assert [label.name for label in info.labels] == LABELS
    assert "fp32.f1" in info.metrics


async def test_server_info_lists_the_task(channel) -> None:
    info = await server_pb2_grpc.ServerStub(channel).GetServerInfo(spb.GetServerInfoRequest())
    task = next(t for t in info.tasks if t.name == TASK)
    assert task.plugin == "edgetune.plugins.multi_label"
    assert list(task.input_kinds) == ["text", "tokens"]
    assert task.description == MultiLabelClassification.description


async def test_labels_as_one_string_or_a_label_field(finetuning) -> None:
    rows = [
        {"text": "the plot", "labels": "story"},
        {"text": "fun and love", "labels": "fun, romance"},
        {"text": "the acting", "label": "cast"},  # the field inline examples carry
        {"text": "love", "labels": ["romance"]},
    ]
    dataset = await upload(finetuning, jsonl(rows))
    assert dict(dataset.label_counts) == {"cast": 1, "fun": 1, "romance": 2, "story": 1}


BAD_ROWS = [
    ({"text": "the plot"}, "row 2: field 'labels' is missing"),
    ({"text": "the plot", "labels": []}, "row 2: field 'labels' is an empty list"),
    (
        {"text": "the plot", "labels": ["story", 3]},
        "row 2: field 'labels': label 2 must be a string",
    ),
    ({"text": "the plot", "labels": ["story", None]}, "row 2: field 'labels': label 2 must be a"),
    (
        {"text": "the plot", "labels": {"story": 1}},
        "row 2: field 'labels' must be a list of strings",
    ),
    ({"text": "the plot", "labels": 7}, "row 2: field 'labels' must be a list of strings"),
    ({"text": "the plot", "labels": ""}, "row 2: field 'labels' is empty"),
    ({"text": "the plot", "labels": "story,,fun"}, "row 2: field 'labels': label 2 is empty"),
    ({"text": "the plot", "labels": ["story", " "]}, "row 2: field 'labels': label 2 is empty"),
    (
        {"text": "the plot", "labels": ["fun", "fun"]},
        "row 2: field 'labels' names label 'fun' twice",
    ),
    ({"text": "the plot", "labels": "fun, fun"}, "row 2: field 'labels' names label 'fun' twice"),
    ({"labels": ["story"]}, "row 2: field 'text' is missing"),
    ({"text": "  ", "labels": ["story"]}, "row 2: field 'text' is empty"),
    ({"text": 5, "labels": ["story"]}, "row 2: field 'text' must be a string"),
    ({"text": "the plot", "label": ""}, "row 2: field 'label' is empty"),
]


async def test_bad_rows_are_refused_naming_the_row(finetuning) -> None:
    good = {"text": "fun", "labels": ["fun"]}
    for bad, message in BAD_ROWS:
        with pytest.raises(aio.AioRpcError) as caught:
            await upload(finetuning, jsonl([good, bad]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, bad
        assert message in caught.value.details(), (bad, caught.value.details())


async def test_validation_labels_must_occur_in_training(finetuning, tiny_bert) -> None:
    train = await upload(finetuning, jsonl(tagged_rows(20, 3)))
    odd = await upload(
        finetuning, jsonl([{"text": "fun", "labels": ["fun"]}, {"text": "a", "labels": "x,fun"}])
    )
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.CreateJob(
            pb.CreateJobRequest(
                task=TASK,
                base_path=str(tiny_bert),
                dataset_id=train.id,
                validation_dataset_id=odd.id,
                model_name="m",
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "validation row 2: label 'x' does not occur in the training data" in (
        caught.value.details()
    )


# ---- metrics, against values worked out by hand -----------------------------------------


def test_metrics_match_hand_computed_values() -> None:
    # labels a b c; logits >= 0 select (sigmoid >= 0.5)
    logits = np.array([[2.0, -1, 0.3], [-2, 1, -0.1], [1, 1, 1], [-3, -3, -3]])
    actual = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    metrics = MultiLabelClassification().compute_metrics(logits, actual, ["a", "b", "c"])
    # rows 3 (c wrongly selected) and 4 (c missed) are not exact matches
    assert metrics["accuracy"] == pytest.approx(2 / 4)
    assert metrics["hamming_loss"] == pytest.approx(2 / 12)
    # true positives a2 b2 c1 = 5 of 6 selected and 6 present
    assert metrics["precision"] == metrics["recall"] == metrics["f1"] == pytest.approx(5 / 6)
    assert metrics["f1/a"] == metrics["f1/b"] == 1.0
    assert metrics["f1/c"] == pytest.approx(0.5)
    assert metrics["macro_f1"] == pytest.approx((1 + 1 + 0.5) / 3)
    # c is best with every row selected (F1 2*2/(4+2)): below its lowest score, sigmoid(-3)
    assert metrics["threshold/c"] == pytest.approx(1 / (1 + np.exp(3)) / 2, rel=1e-4)
    assert metrics["f1_tuned"] == pytest.approx(2 * 6 / (8 + 6))


def test_tuned_thresholds_separate_each_label() -> None:
    scores = np.array([[0.9, 0.2], [0.3, 0.25], [0.2, 0.1], [0.1, 0.05]])
    actual = np.array([[1, 1], [1, 1], [0, 0], [0, 0]], dtype=bool)
    # a: halfway between 0.3 (the lowest positive) and 0.2; b: between 0.2 and 0.1
    assert tune_thresholds(scores, actual) == pytest.approx([0.25, 0.15])
    nothing = np.zeros_like(actual)
    assert tune_thresholds(scores, nothing) == pytest.approx([0.5, 0.5])  # no positives


def test_a_label_never_present_scores_zero_not_nan() -> None:
    logits = np.array([[3.0, -3.0], [-3.0, -3.0]])
    metrics = MultiLabelClassification().compute_metrics(
        logits, np.array([[1.0, 0.0], [0.0, 0.0]]), ["a", "b"]
    )
    assert metrics["f1/b"] == 0.0 and metrics["accuracy"] == 1.0 and metrics["f1"] == 1.0


def test_calibrate_serves_the_thresholds_tuned_on_validation() -> None:
    options = {"max_length": 16, "thresholds": {"plot": 0.5, "fun": 0.5}}
    metrics = {"f1": 0.9, "threshold/plot": 0.35, "threshold/fun": 0.62}
    calibrated = MultiLabelClassification().calibrate(options, metrics)
    assert calibrated == {"max_length": 16, "thresholds": {"plot": 0.35, "fun": 0.62}}
    assert options["thresholds"] == {"plot": 0.5, "fun": 0.5}  # the input is not changed


class TestMultiLabelConformance(TaskConformance):
    """The plugin kit on this task."""

    task_name = TASK
    train_rows = tuple(tagged_rows(48, seed=5))
    serving_inputs = tuple(ipb.Input(text=r["text"]) for r in tagged_rows(4, seed=6))
    bad_rows = tuple((row, message.removeprefix("row 2: ")) for row, message in BAD_ROWS)
    bad_inputs = (
        (ipb.Input(text_pair=ipb.TextPair(text="a", text_pair="b")), "does not take text_pair"),
    )

    def build_base(self, folder: Path) -> None:
        build_tiny_bert(folder, LABELS, [*FILLER, *KEYWORDS])
