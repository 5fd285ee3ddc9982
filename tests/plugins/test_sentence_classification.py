"""The built-in sentence-classification task: zero-shot models from label texts, new labels
as new versions, a few-shot job through the conformance kit, zero-shot -> few-shot -> full
as versions of one model, and refused label inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnxruntime as ort
import pytest

from edgetune.cli.main import main
from edgetune.conformance import TaskConformance, build_tiny_bert
from edgetune.errors import InvalidArgument
from edgetune.exporters.evaluate import open_model
from edgetune.exporters.onnx import import_model
from edgetune.plugins.sentence_classification import SentenceClassification
from edgetune.store import ModelRepository
from edgetune.store.manifest import MODEL_FILE, TRAINABLE_DIR
from edgetune.task import Text, softmax
from edgetune.training.report import few_rows_note
from edgetune.v1 import inference_pb2 as ipb

task = SentenceClassification()
WORDS = ["football", "match", "goal", "shares", "market", "profit", "film", "music", "star"]
ROWS = [
    *({"text": f"the {w} of the day", "label": "sport"} for w in ("football", "match", "goal")),
    *({"text": f"a {w} report", "label": "business"} for w in ("shares", "market", "profit")),
] * 4
TEXTS = ["football match", "market shares", "a film star"]


def build_sentence_encoder(folder: Path, pooling: dict[str, Any] | None = None) -> Path:
    """A tiny BertModel saved as a sentence-transformers folder (modules.json, mean pooling)."""
    from transformers import BertConfig, BertModel

    build_tiny_bert(folder, ["a", "b"], WORDS)
    BertModel(BertConfig.from_pretrained(folder)).save_pretrained(folder)  # type: ignore[no-untyped-call]
    (folder / "modules.json").write_text(
        json.dumps([{"idx": 1, "name": "1", "path": "1_Pooling", "type": "x.models.Pooling"}])
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    modes = pooling or {"pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(modes))
    return folder


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_sentence_encoder(tmp_path_factory.mktemp("encoder"))


def direct_scores(folder: Path, texts: list[str]) -> np.ndarray:
    """softmax(logits) of a plain onnxruntime run of folder/model.onnx, tokenized with
    transformers: independent of the serving runtime."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)  # type: ignore[no-untyped-call]
    feeds = dict(tokenizer(texts, padding=True, return_tensors="np"))
    session = ort.InferenceSession(str(folder / MODEL_FILE), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    return softmax(session.run(["logits"], {k: v for k, v in feeds.items() if k in names})[0])


def cosine_scores(encoder: Path, texts: list[str], label_texts: list[str]) -> np.ndarray:
    """softmax(cos / 0.05) between mean-pooled BertModel embeddings, computed by hand."""
    import torch
    from transformers import AutoTokenizer, BertModel

    tokenizer = AutoTokenizer.from_pretrained(encoder)  # type: ignore[no-untyped-call]
    bert = BertModel.from_pretrained(encoder).eval()

    def embed(batch: list[str]) -> np.ndarray:
        encoded = tokenizer(batch, padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**encoded).last_hidden_state.numpy()
        mask = encoded["attention_mask"].numpy()[..., None]
        mean = (hidden * mask).sum(1) / mask.sum(1)
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    return softmax(embed(texts) @ embed(label_texts).T / 0.05)


def served(version_path: Path, manifest: Any, texts: list[str]) -> np.ndarray:
    """Scores by the task's serving runtime on the published model, in label order."""
    session, runtime = open_model(task, version_path, MODEL_FILE, manifest)
    encoded = runtime.encode([Text(t) for t in texts])
    return softmax(session.run(None, encoded.feeds)[0])


def test_zero_shot_from_labels_alone_serves_the_cosine_classifier(
    encoder: Path, tmp_path: Path
) -> None:
    repository = ModelRepository(tmp_path / "models")
    descriptions = {"sport": "football match goal"}
    version = import_model(
        repository, task, "topics", encoder, ["sport", "business"], descriptions=descriptions
    )
    assert version.version == 1 and version.manifest.labels == ["sport", "business"]
    assert sorted(p.name for p in version.path.glob("*.onnx")) == [MODEL_FILE]  # one graph
    assert "windows" not in version.manifest.task_options  # imported: the first window only
    scores = served(version.path, version.manifest, TEXTS)
    np.testing.assert_allclose(scores, direct_scores(version.path, TEXTS), atol=1e-5)
    expected = cosine_scores(
        encoder, TEXTS, ["sport: football match goal", "This example is business."]
    )
    np.testing.assert_allclose(scores, expected, atol=1e-4)


def test_adding_a_label_is_a_new_version_keeping_the_old_rows(
    encoder: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"sport": "football match", "business": ""}))
    args = ["import-model", "--home", str(home), "--task", task.name, "--name", "topics"]
    assert main([*args, "--labels-file", str(labels), str(encoder)]) == 0
    repository = ModelRepository(home / "models")
    first = repository.resolve("topics", "latest")
    labels.write_text(json.dumps({"sport": "football match", "business": "", "arts": "film"}))
    assert main([*args, "--labels-file", str(labels), str(encoder)]) == 0
    second = repository.resolve("topics", "latest")
    assert (first.version, second.version) == (1, 2)
    assert second.manifest.labels == ["sport", "business", "arts"]
    new = served(second.path, second.manifest, TEXTS)
    want = cosine_scores(
        encoder, TEXTS, ["sport: football match", "This example is business.", "arts: film"]
    )
    np.testing.assert_allclose(new, want, atol=1e-4)
    # From the published version's trainable weights: the old rows are kept, the new
    # label embedded (what a job continuing from the model starts from).
    model: Any = task.build_model(first.path / TRAINABLE_DIR, ["arts", "sport", "business"])
    old: Any = task.build_model(first.path / TRAINABLE_DIR, ["sport", "business"])
    np.testing.assert_allclose(model.head.weight[1:].detach(), old.head.weight.detach())
    assert model.config.label_texts["arts"] == "This example is arts."


def test_prepare_model_sets_each_label_s_row_to_its_prototype(encoder: Path) -> None:
    import torch

    labels = ["sport", "business", "arts"]
    model: Any = task.build_model(encoder, labels)
    before = model.head.weight.detach().clone()
    tokenizer = task.load_preprocessor(encoder)
    features = task.build_features(ROWS * 2, tokenizer, labels, max_length=32)  # 24 a label
    task.prepare_model(model, features, task.collate(tokenizer))
    sport = [r["text"] for r in ROWS * 2 if r["label"] == "sport"]
    encoded = tokenizer(sport, padding=True, return_tensors="pt")
    with torch.no_grad():
        summed = model.eval().embed(**encoded).sum(0)
    prior = torch.nn.functional.normalize(before[0], dim=0)  # the label text: one more row
    want = torch.nn.functional.normalize(summed + prior, dim=0) / 0.05
    np.testing.assert_allclose(model.head.weight[0].detach(), want, atol=1e-4)
    assert not torch.allclose(model.head.weight[1], before[1])
    torch.testing.assert_close(model.head.weight[2], before[2])  # no rows: its label text's
    assert not model.config.freeze_encoder  # 24 rows per label: encoder and head train
    assert all(p.requires_grad for p in model.bert.parameters())


def test_a_few_shot_head_is_a_logistic_regression_on_the_rows(encoder: Path) -> None:
    """12 rows a label: after the contrastive stage the head is scikit-learn's logistic
    regression (C=HEAD_C, no intercept) on the rows' embeddings and the label texts' as one
    row each, a label without rows included, and only the head trains on."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from edgetune.plugins.sentence_encoder import HEAD_C

    labels = ["sport", "business", "arts"]
    model: Any = task.build_model(encoder, labels)
    prior = torch.nn.functional.normalize(model.head.weight.detach().clone(), dim=1)
    tokenizer = task.load_preprocessor(encoder)
    features = task.build_features(ROWS, tokenizer, labels, max_length=32)
    torch.manual_seed(0)
    task.prepare_model(model, features, task.collate(tokenizer))
    encoded = tokenizer([r["text"] for r in ROWS], padding=True, return_tensors="pt")
    with torch.no_grad():
        embedded = model.eval().embed(**encoded)
    targets = [labels.index(r["label"]) for r in ROWS] + [0, 1, 2]
    want = LogisticRegression(C=HEAD_C, fit_intercept=False, max_iter=1_000).fit(
        torch.cat([embedded, prior]).double().numpy(), targets
    )
    np.testing.assert_allclose(model.head.weight.detach(), want.coef_, rtol=1e-3, atol=1e-3)
    logits = model.head(embedded)
    assert logits.argmax(1).tolist() == targets[: len(ROWS)]  # the rows it was fitted on
    assert model.config.freeze_encoder
    assert not any(p.requires_grad for p in model.bert.parameters())


def test_a_two_label_few_shot_head_scores_as_its_logistic_regression(encoder: Path) -> None:
    """With two labels scikit-learn fits one weight vector w; the head's rows -w/2 and w/2
    give the same probabilities under the softmax."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from edgetune.plugins.sentence_encoder import HEAD_C

    labels = ["sport", "business"]
    model: Any = task.build_model(encoder, labels)
    prior = torch.nn.functional.normalize(model.head.weight.detach().clone(), dim=1)
    tokenizer = task.load_preprocessor(encoder)
    task.prepare_model(
        model, task.build_features(ROWS, tokenizer, labels, max_length=32), task.collate(tokenizer)
    )
    encoded = tokenizer(TEXTS + [r["text"] for r in ROWS], padding=True, return_tensors="pt")
    with torch.no_grad():
        embedded = model.eval().embed(**encoded)
        probabilities = torch.softmax(model.head(embedded), dim=1).numpy()
    fitted = embedded[len(TEXTS) :]
    targets = [labels.index(r["label"]) for r in ROWS] + [0, 1]
    want = LogisticRegression(C=HEAD_C, fit_intercept=False, max_iter=1_000).fit(
        torch.cat([fitted, prior]).double().numpy(), targets
    )
    np.testing.assert_allclose(
        probabilities, want.predict_proba(embedded.double().numpy()), atol=1e-3
    )


def test_the_contrastive_stage_draws_a_label_s_rows_together(encoder: Path) -> None:
    import torch

    labels = ["sport", "business"]
    tokenizer = task.load_preprocessor(encoder)
    features = task.build_features(ROWS, tokenizer, labels, max_length=32)
    batch = task.collate(tokenizer)(features)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    same = batch["labels"][:, None] == batch["labels"][None, :]

    def margin(model: Any) -> float:
        """Mean cosine of same-label pairs minus that of other-label pairs."""
        with torch.no_grad():
            embedded = model.eval().embed(**inputs)
        similarity = embedded @ embedded.T
        return float(similarity[same].mean() - similarity[~same].mean())

    from edgetune.plugins.sentence_encoder import contrast

    torch.manual_seed(0)
    model: Any = task.build_model(encoder, labels)
    before = margin(model)
    contrast(model, batch)
    assert margin(model) > before + 0.01
    # 24 rows per label is not few-shot: prepare_model leaves the encoder to training.
    fresh: Any = task.build_model(encoder, labels)
    task.prepare_model(fresh, features * 2, task.collate(tokenizer))
    assert margin(fresh) == pytest.approx(before)


@pytest.mark.parametrize(
    ("labels", "descriptions", "message"),
    [
        (["sport", " "], {}, "labels[1]: the label has no name"),
        (["sport", "sport"], {}, "labels[1]: label 'sport' is given twice"),
        (["sport"], {"sport": "x" * 1001}, "label_descriptions['sport'] has 1001 characters"),
        (["sport"], {"tech": "chips"}, "label_descriptions: 'tech' is not one of the labels"),
        ([], {}, "labels: at least one label is needed"),
    ],
)
def test_bad_labels_are_refused_naming_the_field(
    encoder: Path, labels: list[str], descriptions: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidArgument) as refused:
        task.build_model_from_descriptions(encoder, labels, descriptions)
    assert message in refused.value.message


def test_a_labels_file_with_a_label_twice_is_refused(
    encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text('{"sport": "a", "sport": "b"}')
    args = ["import-model", "--home", str(tmp_path), "--task", task.name, "--name", "x"]
    assert main([*args, "--labels-file", str(labels), str(encoder)]) == 2
    assert "label 'sport' is given twice" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("pooling", "message"),
    [
        (None, "has no pooling config (1_Pooling/config.json)"),
        ({"pooling_mode_cls_token": True}, "pools with cls_token; this task needs mean pooling"),
    ],
)
def test_a_base_without_mean_pooling_is_refused(
    tmp_path: Path, pooling: dict[str, Any] | None, message: str
) -> None:
    base = build_sentence_encoder(tmp_path / "base", pooling)
    if pooling is None:
        (base / "1_Pooling" / "config.json").unlink()
    with pytest.raises(InvalidArgument) as refused:
        task.build_model(base, ["a", "b"])
    assert refused.value.message.startswith("base: ") and message in refused.value.message


def test_a_task_without_descriptions_refuses_them(tiny_bert: Path, plugins: Any) -> None:
    with pytest.raises(InvalidArgument, match="label_descriptions: task 'text-classification'"):
        plugins.task("text-classification").build_model_from_descriptions(
            tiny_bert, ["a"], {"a": "x"}
        )


class TestSentenceClassificationConformance(TaskConformance):
    """A few-shot job (a dozen rows) on the tiny encoder, exported, served and compared."""

    task_name = "sentence-classification"
    train_rows: ClassVar = ROWS
    serving_inputs: ClassVar = [ipb.Input(text=t) for t in TEXTS]
    bad_rows: ClassVar = [({"label": "sport"}, "field 'text' is missing")]
    bad_inputs: ClassVar = [
        (ipb.Input(text_pair=ipb.TextPair(text="a", text_pair="b")), "text_pair")
    ]

    def build_base(self, folder: Path) -> None:
        build_sentence_encoder(folder)

    def test_served_scores_equal_the_torch_model(self, published: dict[str, Any]) -> None:
        import torch

        result = published["job"].result
        assert "the validation figures and the int8 gate are unreliable" in result.selection
        # So few validation rows are worth more as training rows: the job trained on all.
        assert f"a single run on all {len(ROWS)} labelled rows" in result.selection
        assert result.retrained and not result.estimated_metrics
        assert result.comparison.startswith("no comparison with the baseline")
        version = ModelRepository(published["home"] / "models").resolve("conformance")
        model: Any = task.build_model(version.path / TRAINABLE_DIR, version.manifest.labels)
        tokenizer = task.load_preprocessor(version.path / TRAINABLE_DIR)
        with torch.no_grad():
            logits = model.eval()(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits
        want = softmax(logits.numpy())
        got = np.array(
            [
                [
                    next(s.score for s in r.labels if s.label == label)
                    for label in version.manifest.labels
                ]
                for r in published["results"]
            ]
        )
        # Few rows per label: the contrastive stage moved the encoder, then the head
        # trained alone (the frozen encoder is kept in the config).
        assert model.config.freeze_encoder
        base: Any = task.build_model(published["base"], version.manifest.labels)
        assert any(
            not torch.allclose(trained, original)
            for trained, original in zip(
                model.bert.parameters(), base.bert.parameters(), strict=True
            )
        )
        assert not torch.allclose(model.head.weight, base.head.weight)
        # int8 (when the gate took it) moves scores a little; fp32 matches to float error.
        atol = 0.05 if version.manifest.format == "onnx-int8" else 1e-4
        np.testing.assert_allclose(got, want, atol=atol)


def test_a_job_with_few_validation_rows_per_label_says_its_figures_are_unreliable() -> None:
    rows = [{"text": "a", "label": "sport"}] * 5 + [{"text": "b", "label": "arts"}] * 2
    note = few_rows_note(task, rows)
    assert note is not None and "as few as 2 for label 'arts', 7 in all" in note
    assert few_rows_note(task, rows[:5] + rows[5:] * 3) is None


async def test_import_model_over_grpc_passes_label_descriptions(
    settings: Any, plugins: Any, tiny_bert: Path
) -> None:
    """Models.ImportModel hands label_descriptions to the task (through the import child's
    --labels-file): a task without zero-shot refuses them, a key outside labels is refused."""
    import asyncio

    from grpc import aio

    from edgetune.cli.finetune import upload_base
    from edgetune.server.app import start_server
    from edgetune.v1 import finetuning_pb2_grpc, models_pb2, models_pb2_grpc

    running = await start_server(settings, plugins)
    try:
        address = f"127.0.0.1:{running.port}"

        def upload() -> str:
            import grpc

            with grpc.insecure_channel(address) as channel:
                return upload_base(finetuning_pb2_grpc.FineTuningStub(channel), tiny_bert, 60)

        base = await asyncio.to_thread(upload)
        async with aio.insecure_channel(address) as channel:
            models = models_pb2_grpc.ModelsStub(channel)
            for request, message in [
                (
                    models_pb2.ImportModelRequest(
                        name="m", task="text-classification", base=base, labels=["a", "b"],
                        label_descriptions={"a": "the first"},
                    ),
                    "label_descriptions: task 'text-classification' does not take",
                ),
                (
                    models_pb2.ImportModelRequest(
                        name="m", task=task.name, base=base, labels=["a"],
                        label_descriptions={"b": "not listed"},
                    ),
                    "label_descriptions: 'b' is not one of the labels",
                ),
                (
                    models_pb2.ImportModelRequest(
                        name="m", task=task.name, base=base, label_descriptions={"a": "x"}
                    ),
                    "base: ",  # an uploaded BERT classifier has no pooling config
                ),
            ]:  # fmt: skip
                with pytest.raises(aio.AioRpcError) as refused:
                    await models.ImportModel(request, timeout=300)
                assert refused.value.code().name == "INVALID_ARGUMENT"
                assert message in (refused.value.details() or ""), refused.value.details()
    finally:
        await running.stop(0)


async def test_zero_shot_then_few_shot_then_full_each_compared_with_the_last(
    encoder: Path, repository: ModelRepository, server: Any, channel: Any
) -> None:
    """One model name through its three stages over gRPC: each job starts from the latest
    version, publishes and promotes the next, and measures the version it started from on its own
    validation rows (the few-shot job trained on them, so it does not claim a gain)."""
    from edgetune.exporters.evaluate import evaluate
    from edgetune.training.datasets import stratified_split
    from edgetune.v1 import finetuning_pb2 as pb
    from edgetune.v1 import finetuning_pb2_grpc

    import_model(repository, task, "topics", encoder, ["sport", "business"])
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    hp = pb.Hyperparameters(epochs=2, learning_rate=1e-3, batch_size=8, max_length=16)

    async def job(rows: list[dict[str, str]], split: float) -> pb.Job:
        created = await stub.CreateJob(
            pb.CreateJobRequest(
                base_model=pb.ModelRef(name="topics"),
                examples=pb.Examples(examples=[pb.Example(**r) for r in rows]),
                validation_split=split,
                model_name="topics",
                hyperparameters=hp,
                auto_promote=True,  # the next job starts from this version
            )
        )
        async for _ in stub.WatchJob(pb.WatchJobRequest(id=created.id), timeout=300):
            pass
        done = await stub.GetJob(pb.GetJobRequest(id=created.id))
        assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
        return done

    few = await job(ROWS, 0.2)  # 12 rows a label: few-shot, trained on all 24
    assert few.task == task.name and few.result.version == "2"
    assert "accuracy" in few.result.previous_metrics
    assert few.result.previous_comparison.startswith("topics version 1 on ")
    assert "this version trained on those rows" in few.result.previous_comparison
    full_rows = ROWS * 4  # 48 rows a label: encoder and head, 24 a label held out
    full = await job(full_rows, 0.5)
    assert full.result.version == "3"
    _, val_rows = stratified_split(task, full_rows, 0.5, 42)
    second = repository.resolve("topics", "2")
    labels = second.manifest.labels
    want = evaluate(
        task, second.path, MODEL_FILE, second.manifest, val_rows,
        [labels.index(r["label"]) for r in val_rows],
    )  # fmt: skip
    for name, value in full.result.previous_metrics.items():
        assert value == pytest.approx(want[name], abs=1e-6), name
    served = full.result.int8_metrics or full.result.fp32_metrics
    points = (served["f1"] - want["f1"]) * 100
    assert full.result.previous_comparison == (
        f"topics version 2 on {len(val_rows)} validation rows: f1 {want['f1']:.4f}, "
        f"this {served['f1']:.4f} ({points:+.2f} points)"
    )


def test_a_version_that_knew_only_some_labels_is_not_compared_on_other_rows(
    encoder: Path, tmp_path: Path
) -> None:
    """A job that adds a label measures the old version on the rows whose labels it knows;
    its figures are on fewer rows than the new version's, so no difference is claimed."""
    from edgetune.training.report import against_previous, previous_metrics

    repository = ModelRepository(tmp_path / "models")
    old = import_model(repository, task, "topics", encoder, ["sport", "business"])
    rows = [*ROWS, {"text": "a film star", "label": "arts"}, {"text": "music", "label": "arts"}]
    metrics, measured = previous_metrics(task, old, rows, task.load_preprocessor(encoder), 32)
    assert measured == len(ROWS) and "accuracy" in metrics
    said = against_previous(
        old, metrics, (measured, len(rows)), {}, {"f1": 1.0, "accuracy": 1.0}, "f1"
    )
    assert said == (
        f"topics version 1 on the {len(ROWS)} of {len(rows)} validation rows whose labels "
        f"it knows: f1 {metrics['f1']:.4f}; this version's figures are on all {len(rows)}, "
        "so they are not compared"
    )


async def test_a_search_starts_from_the_task_s_learning_rate(
    encoder: Path, repository: ModelRepository, server: Any, channel: Any
) -> None:
    """The first trial takes the task's `search_start` over the server's defaults."""
    from edgetune.training.spec import SEARCH_START
    from edgetune.v1 import finetuning_pb2 as pb
    from edgetune.v1 import finetuning_pb2_grpc

    assert task.search_start["learning_rate"] != SEARCH_START["learning_rate"]
    import_model(repository, task, "topics", encoder, ["sport", "business"])
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    created = await stub.CreateJob(
        pb.CreateJobRequest(
            base_model=pb.ModelRef(name="topics"),
            examples=pb.Examples(examples=[pb.Example(**r) for r in ROWS * 4]),
            validation_split=0.5,
            model_name="topics",
            hyperparameters=pb.Hyperparameters(epochs=1, batch_size=8, max_length=16),
            search=pb.Search(trials=2, time_budget_minutes=30),
        )
    )
    async for _ in stub.WatchJob(pb.WatchJobRequest(id=created.id), timeout=300):
        pass
    done = await stub.GetJob(pb.GetJobRequest(id=created.id))
    assert done.state == pb.JOB_STATE_SUCCEEDED, done.error
    first = done.result.trials[0]
    assert first.number == 1
    assert first.hyperparameters.learning_rate == pytest.approx(task.search_start["learning_rate"])
    assert first.hyperparameters.warmup_ratio == pytest.approx(SEARCH_START["warmup_ratio"])
