"""The built-in token-classification task: BIO rules, features and offsets through its Task
interface, and a named-entity model trained, exported and served over gRPC."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from conftest import WORDS
from grpc import aio

from edgetune.conformance import TaskConformance, build_tiny_bert
from edgetune.kserve import grpc_predict_v2_pb2 as kpb
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.plugins.token_classification import (
    TokenClassification,
    entities,
    entity_metrics,
)
from edgetune.store import Manifest
from edgetune.task import ModelFiles, Text, pad_to_longest
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

task = TokenClassification()
TASK = "token-classification"
TAGS = ["B-LOC", "B-PER", "I-PER", "O"]

# ---- a test-made NER data set: filler words, people (one or two words) and places ----------

FIRST_NAMES = ["Alice", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hugo"]
SURNAMES = ["Smith", "Novak", "Okafor", "Quist"]
PLACES = ["Paris", "Oslo", "Lima", "Cairo", "Rome", "Kyiv", "Dakar", "Zurich"]
FILLER = [w for w in WORDS if len(w) > 1]


def ner_row(rng: random.Random) -> dict[str, list[str]]:
    """Filler words with one person (first name, sometimes a surname) and maybe a place."""
    pieces: list[list[tuple[str, str]]] = [[(w, "O")] for w in rng.sample(FILLER, 5)]
    person = [(rng.choice(FIRST_NAMES), "B-PER")]
    if rng.random() < 0.5:
        person.append((rng.choice(SURNAMES), "I-PER"))
    pieces.insert(rng.randrange(len(pieces) + 1), person)
    if rng.random() < 0.7:
        pieces.insert(rng.randrange(len(pieces) + 1), [(rng.choice(PLACES), "B-LOC")])
    words = [pair for piece in pieces for pair in piece]
    return {"tokens": [w for w, _ in words], "tags": [t for _, t in words]}


def ner_rows(count: int, seed: int) -> list[dict[str, list[str]]]:
    rng = random.Random(seed)
    return [ner_row(rng) for _ in range(count)]


def jsonl(rows: list[dict[str, object]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def expected_spans(row: dict[str, list[str]]) -> set[tuple[int, int, str]]:
    """(start, end, type) in code points of the words joined with spaces."""
    starts, position = [], 0
    for word in row["tokens"]:
        starts.append(position)
        position += len(word) + 1
    return {
        (starts[first], starts[end - 1] + len(row["tokens"][end - 1]), kind)
        for kind, first, end in entities(row["tags"])
    }


# ---- BIO and metrics --------------------------------------------------------------------


def test_entities_are_read_the_conlleval_way() -> None:
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-PER", "B-PER", "B-PER"]
    assert entities(tags) == [
        ("PER", 0, 2),
        ("LOC", 3, 5),  # I- after O opens an entity
        ("LOC", 5, 6),  # B- closes the open one
        ("PER", 6, 7),  # a type change closes too
        ("PER", 7, 8),
        ("PER", 8, 9),
    ]
    assert entities(["O", "O"]) == [] and entities([]) == []


def test_entity_metrics_need_exact_spans() -> None:
    actual = [["B-PER", "I-PER", "O", "B-LOC"], ["B-LOC", "O"]]
    predicted = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "B-PER"]]
    # gold: PER 0-2, LOC 3-4, LOC 0-1; predicted: PER 0-1 (wrong end), LOC 3-4, LOC 0-1, PER 1-2
    metrics = entity_metrics(predicted, actual, ["LOC", "PER"])
    assert metrics["precision"] == pytest.approx(2 / 4)
    assert metrics["recall"] == pytest.approx(2 / 3)
    assert metrics["f1"] == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert metrics["f1/LOC"] == 1.0 and metrics["f1/PER"] == 0.0
    assert entity_metrics([["O"]], [["O"]], ["PER"]) == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "f1/PER": 0.0,
    }


def test_compute_metrics_scores_labelled_positions_of_wider_logits() -> None:
    ignore = -100
    label_ids = np.array([[ignore, 1, 2, ignore, 3], [ignore, 0, 3, ignore, ignore]])
    predicted = np.array([[3, 1, 3, 0, 3, 3], [0, 0, 3, 1, 1, 1]])  # wider: serving padding
    logits = np.eye(len(TAGS))[predicted]
    metrics = task.compute_metrics(logits, label_ids, TAGS)
    assert metrics["accuracy"] == pytest.approx(4 / 5)  # I-PER missed, ignored positions free
    # gold PER 0-2, LOC 0-1; predicted PER 0-1, LOC 0-1
    assert (metrics["precision"], metrics["recall"]) == (0.5, 0.5)
    assert metrics["f1/LOC"] == 1.0 and metrics["f1/PER"] == 0.0


def test_ragged_outputs_are_padded_and_equal_shapes_left_alone() -> None:
    same = [np.array([1, 2]), np.array([3, 4])]
    assert all(a is b for a, b in zip(pad_to_longest(same, -100), same, strict=True))
    ragged = pad_to_longest([np.array([1]), np.array([1, 2, 3])], -100)
    assert np.stack(ragged).tolist() == [[1, -100, -100], [1, 2, 3]]
    batches = pad_to_longest([np.ones((2, 3)), np.ones((1, 5))], 0, from_axis=1)
    assert [b.shape for b in batches] == [(2, 5), (1, 5)]


# ---- features and serving offsets ---------------------------------------------------------


def test_features_label_the_first_piece_of_each_served_word(tiny_bert: Path) -> None:
    tokenizer = task.load_preprocessor(tiny_bert)
    row = {
        "tokens": ["Ada", "O'Neil", "was", "in", "Lima."],
        "tags": ["B-PER", "I-PER", "O", "O", "B-LOC"],
    }
    (feature,) = task.build_features([row], tokenizer, TAGS, max_length=32)
    pieces = tokenizer.convert_ids_to_tokens(feature["input_ids"])
    tagged = [(p, TAGS[t]) for p, t in zip(pieces, feature["labels"], strict=True) if t >= 0]
    # "O'Neil" is served as three words: O ' Neil, all inside the person. "Lima." ends in a
    # word "." whose tag would be I-LOC, not a training label, so it is left out.
    assert tagged == [
        ("a", "B-PER"),
        ("o", "I-PER"),
        ("[UNK]", "I-PER"),
        ("n", "I-PER"),
        ("was", "O"),
        ("i", "O"),
        ("l", "B-LOC"),
    ]
    assert task.example_input(row) == Text("Ada O'Neil was in Lima.")


def test_the_runtime_reports_spans_in_code_points(tiny_bert: Path) -> None:
    manifest = Manifest(task=TASK, labels=TAGS, task_options={"max_length": 32})
    runtime = task.runtime(
        ModelFiles(tiny_bert, manifest, ("input_ids", "attention_mask"), ("logits",))
    )
    texts = [Text("Zoë Smith flew to Århus."), Text("plain words")]
    encoded = runtime.encode(texts)
    assert set(encoded.feeds) == {"input_ids", "attention_mask"}
    # Fake logits that tag a token by the first letter of its word, as a model would; the
    # pieces after a word's first must not matter, so they say B-LOC.
    first_letter = {"Z": "B-PER", "S": "I-PER", "Å": "B-LOC", ".": "I-PER"}
    logits = np.zeros((*encoded.feeds["input_ids"].shape, len(TAGS)), dtype=np.float32)
    for row, (text, encoding) in enumerate(encoded.state):
        previous = None
        for position, (word, (start, _)) in enumerate(
            zip(encoding.word_ids, encoding.offsets, strict=True)
        ):
            tag = first_letter.get(text[start : start + 1], "O") if word != previous else "B-LOC"
            logits[row, position, TAGS.index(tag)] = 5.0
            previous = word
    zoe, plain = runtime.decode([logits], encoded, top_k=0)
    text = texts[0].text
    assert [(s.start, s.end, s.label, s.text) for s in zoe.spans] == [
        (0, 9, "PER", "Zoë Smith"),
        (18, 23, "LOC", "Århus"),
        (23, 24, "PER", "."),  # I-PER after a place opens a new person, as conlleval does
    ]
    assert all(text[s.start : s.end] == s.text for s in zoe.spans)
    assert zoe.spans[0].score == pytest.approx(float(np.exp(5) / (np.exp(5) + 3)))
    assert {label.label for label in zoe.labels} == {"LOC", "PER"}
    assert all(label.selected for label in zoe.labels)
    assert len(runtime.decode([logits], encoded, top_k=1)[0].labels) == 1
    assert plain.spans == [] and plain.labels == []


# ---- over gRPC ----------------------------------------------------------------------------


@pytest.fixture
def finetuning(channel: aio.Channel) -> finetuning_pb2_grpc.FineTuningStub:
    return finetuning_pb2_grpc.FineTuningStub(channel)


async def upload(stub: finetuning_pb2_grpc.FineTuningStub, data: bytes) -> pb.Dataset:
    async def messages():
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(task=TASK, filename="ner.jsonl"))
        yield pb.UploadDatasetRequest(chunk=data)

    return await stub.UploadDataset(messages())


GOOD = {"tokens": ["Ada", "met", "Bob"], "tags": ["B-PER", "O", "B-PER"]}
BAD_ROWS = [
    (
        {"tokens": ["Ada", "met"], "tags": ["B-PER"]},
        "row 2: field 'tags' has 1 tags but 'tokens' has 2",
    ),
    ({"tokens": [], "tags": []}, "row 2: field 'tokens' is empty"),
    ({"tokens": ["Ada", 5], "tags": ["B-PER", "O"]}, "row 2: field 'tokens[1]' must be a string"),
    ({"tokens": ["Ada", " "], "tags": ["B-PER", "O"]}, "row 2: field 'tokens[1]' is empty"),
    ({"tokens": "Ada met", "tags": ["B-PER", "O"]}, "row 2: field 'tokens' must be a list"),
    ({"tokens": ["Ada"]}, "row 2: field 'tags' is missing"),
    ({"tokens": ["Ada"], "tags": ["PER"]}, "row 2: field 'tags[0]' = 'PER' is not a BIO tag"),
    ({"tokens": ["New York"], "tags": ["B-LOC"]}, "row 2: field 'tokens[0]' contains whitespace"),
]


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
async def test_bad_rows_name_the_row_and_field(finetuning, row, message) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await upload(finetuning, jsonl([GOOD, row]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


async def test_train_export_and_serve_entities(finetuning, channel, tiny_bert) -> None:
    rows = ner_rows(160, seed=0)
    dataset = await upload(finetuning, jsonl(rows))
    assert dataset.rows == 160
    assert set(dataset.label_counts) == set(TAGS)  # rows per tag, for stratifying
    assert dataset.label_counts["O"] == 160

    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task=TASK,
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            model_name="ner",
            hyperparameters=pb.Hyperparameters(
                epochs=6, learning_rate=5e-3, batch_size=16, max_length=32
            ),
            auto_promote=True,
        )
    )
    events = [e async for e in finetuning.WatchJob(pb.WatchJobRequest(id=job.id), timeout=300)]
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, [e.message for e in events])
    assert {"f1", "precision", "recall", "accuracy", "f1/PER", "f1/LOC"} <= set(final.metrics)
    result = final.result
    assert "f1" in result.gate and "f1" in result.fp32_metrics
    # The ONNX export, fed by the serving tokenizer, scores as the torch checkpoint did: the
    # runtime's token positions line up with the training targets.
    assert result.fp32_metrics["f1"] == pytest.approx(final.metrics["f1"], abs=0.05)
    assert result.fp32_metrics["accuracy"] == pytest.approx(final.metrics["accuracy"], abs=0.02)

    held_out = ner_rows(24, seed=99)
    inference = inference_pb2_grpc.InferenceStub(channel)
    hits = predicted = actual = 0
    for start in range(0, len(held_out), 8):
        batch = held_out[start : start + 8]
        texts = [" ".join(r["tokens"]) for r in batch]
        reply = await inference.Classify(
            ipb.ClassifyRequest(model="ner", inputs=[ipb.Input(text=t) for t in texts])
        )
        for text, row, answer in zip(texts, batch, reply.results, strict=True):
            for span in answer.spans:
                assert text[span.start : span.end] == span.text
                assert span.label in ("PER", "LOC") and 0 < span.score <= 1
            assert {label.label for label in answer.labels} == {s.label for s in answer.spans}
            got = {(s.start, s.end, s.label) for s in answer.spans}
            want = expected_spans(row)
            hits, predicted, actual = (
                hits + len(got & want),
                predicted + len(got),
                actual + len(want),
            )
    f1 = 2 * hits / (predicted + actual)
    # Exact-span F1 of a tagger that guesses is near 0 (a word is an entity start ~1 time in
    # 6, and the span must also have the right end and type); the model should be far above.
    assert f1 >= 0.7, (hits, predicted, actual)

    odd = "Zoë and Alice Smith flew to Oslo."
    reply = await inference.Classify(ipb.ClassifyRequest(model="ner", inputs=[ipb.Input(text=odd)]))
    for span in reply.results[0].spans:
        assert odd[span.start : span.end] == span.text

    # The KServe v2 protocol answers the same spans, as JSON per input.
    v2 = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    metadata = await v2.ModelMetadata(kpb.ModelMetadataRequest(name="ner"))
    assert "spans" in [o.name for o in metadata.outputs]
    tensor = kpb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1])
    tensor.contents.bytes_contents.append(odd.encode())
    inferred = await v2.ModelInfer(
        kpb.ModelInferRequest(model_name="ner", inputs=[tensor], outputs=[{"name": "spans"}])
    )
    served = json.loads(inferred.outputs[0].contents.bytes_contents[0])
    assert served == [
        {
            "start": s.start,
            "end": s.end,
            "label": s.label,
            "score": pytest.approx(s.score),  # float32 in Classify's proto
            "text": s.text,
        }
        for s in reply.results[0].spans
    ]

    # Spans need the text: token ids are refused before the model runs.
    with pytest.raises(aio.AioRpcError) as caught:
        await inference.Classify(
            ipb.ClassifyRequest(model="ner", inputs=[ipb.Input(tokens=ipb.TokenIds(ids=[2, 3]))])
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


class TestTokenClassificationConformance(TaskConformance):
    """The plugin kit on this task: its span answers must equal the runtime's own."""

    task_name = TASK
    train_rows = tuple(ner_rows(60, seed=3))
    serving_inputs = tuple(ipb.Input(text=" ".join(r["tokens"])) for r in ner_rows(4, seed=4))
    bad_rows = tuple((row, message.removeprefix("row 2: ")) for row, message in BAD_ROWS)
    bad_inputs = ((ipb.Input(tokens=ipb.TokenIds(ids=[5, 6])), "does not take tokens"),)
    # Trained enough to find entities, so the span comparison has spans to compare.
    hyperparameters = pb.Hyperparameters(epochs=6, learning_rate=5e-3, batch_size=16, max_length=32)

    def test_the_served_answers_have_spans(self, published: dict[str, Any]) -> None:
        assert any(result.spans for result in published["results"])

    def build_base(self, folder: Path) -> None:
        build_tiny_bert(folder, TAGS, WORDS, token_task=True)
