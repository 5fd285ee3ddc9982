"""A conformance kit for task plugins: subclass `TaskConformance` in your plugin's tests.

    class TestIntent(TaskConformance):
        task_name = "intent-detection"
        train_rows = [...]           # labelled rows in your task's data-set schema
        serving_inputs = [...]       # edgetune.v1 Input messages to classify afterwards
        bad_rows = [...]             # (row, fragment of the expected error message)
        bad_inputs = [...]           # (Input, fragment of the expected error message)

        def build_base(self, folder):
            ...                      # save a tiny transformers model (and preprocessor) there

pytest then runs every `test_*` check below against the real thing: the plugin is found
through its entry point (or `plugin_modules`), a real server on loopback takes a data-set
upload, a real training process fine-tunes the tiny base for a few steps, Optimum exports it,
the server publishes and serves it, and the answers over gRPC must equal the task's own
runtime run directly on the published ONNX model. Bad rows and inputs must get
INVALID_ARGUMENT naming what is wrong, and the serving half must not import torch.

The checks are synchronous (each runs its own event loop), so the plugin's test suite needs
pytest and nothing else. `build_tiny_bert` makes a tiny text base for text tasks.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import grpc
import numpy as np
import pytest
from grpc import aio

from edgetune.errors import EdgetuneError
from edgetune.exporters.evaluate import open_model
from edgetune.plugins.manager import Plugins, build_plugins
from edgetune.server.app import start_server
from edgetune.server.convert import inputs_from_pb
from edgetune.settings import load_settings
from edgetune.store import ModelRepository
from edgetune.store.manifest import MODEL_FILE
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

MODEL_NAME = "conformance"


def build_tiny_bert(
    folder: Path,
    labels: Sequence[str],
    words: Sequence[str],
    *,
    token_task: bool = False,
    seed: int = 0,
) -> Path:
    """Save a 2-layer, 32-wide random BERT with a WordPiece tokenizer over `words` (plus
    single letters, so any lower-case word tokenizes) into folder. A sequence classifier,
    or a token classifier with `token_task`. Needs torch and transformers."""
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertForTokenClassification,
        BertTokenizerFast,
    )

    folder.mkdir(parents=True, exist_ok=True)
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [w for w in dict.fromkeys(words) if w not in letters]
    vocab += letters + [f"##{c}" for c in letters]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))  # type: ignore[no-untyped-call]
    tokenizer.save_pretrained(folder)
    config = BertConfig(  # type: ignore[no-untyped-call]
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    model_class = BertForTokenClassification if token_task else BertForSequenceClassification
    model_class(config).save_pretrained(folder)
    return folder


def build_tiny_vit(folder: Path, labels: Sequence[str], *, seed: int = 0) -> Path:
    """Save a 2-layer, 32-wide random ViT for 32x32 images (8x8 patches) and its image
    processor into folder: a base for image tasks. Needs torch and transformers."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    config = ViTConfig(  # type: ignore[no-untyped-call]
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    torch.manual_seed(seed)
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


class TaskConformance:
    """Checks a task plugin end to end. Subclass it as `Test...` and fill in the blanks."""

    task_name: ClassVar[str]
    """The task under test."""
    train_rows: ClassVar[Sequence[Mapping[str, Any]]]
    """Labelled rows in the task's data-set schema (uploaded as JSONL); a few dozen do."""
    serving_inputs: ClassVar[Sequence[ipb.Input]]
    """Inputs to classify with the fine-tuned model."""
    bad_rows: ClassVar[Sequence[tuple[Mapping[str, Any], str]]] = ()
    """Rows the task must refuse, each with a fragment of the expected message."""
    bad_inputs: ClassVar[Sequence[tuple[ipb.Input, str]]] = ()
    """Inputs the served model must refuse with INVALID_ARGUMENT, with a message fragment."""
    plugin_modules: ClassVar[Sequence[str]] = ()
    """Plugin modules to load by import path; empty finds the plugin by its entry point."""
    hyperparameters: ClassVar[fpb.Hyperparameters] = fpb.Hyperparameters(
        epochs=1, learning_rate=3e-3, batch_size=8, max_length=32
    )
    timeout_s: ClassVar[float] = 300.0
    """Longest the fine-tune may take."""

    def build_base(self, folder: Path) -> None:
        """Save a tiny base model (config, safetensors weights, preprocessor) into folder."""
        raise NotImplementedError("override build_base to save a tiny base model")

    # -- fixtures --------------------------------------------------------------------------

    @pytest.fixture(scope="class")
    @classmethod
    def plugins(cls) -> Plugins:
        """The plugins as the server will load them."""
        return build_plugins(cls.plugin_modules)

    @pytest.fixture(scope="class")
    @classmethod
    def published(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        """Fine-tune, export and publish once per class: the home and base folders, the
        answers it served, the job."""
        base = tmp_path_factory.mktemp("base")
        cls().build_base(base)
        home = tmp_path_factory.mktemp("home")
        return asyncio.run(cls()._fine_tune_and_serve(base, home))

    # -- checks ----------------------------------------------------------------------------

    def test_the_task_is_registered(self, plugins: Plugins) -> None:
        task = plugins.task(self.task_name)
        assert task.description, "a task needs a one-line description"
        assert task.input_kinds, "a task must accept at least one input kind"
        assert task.optimum_task, "a task needs the Optimum export task for its models"

    def test_bad_rows_are_refused_naming_the_row(self, plugins: Plugins) -> None:
        task = plugins.task(self.task_name)
        for row, fragment in self.bad_rows:
            with pytest.raises(EdgetuneError) as refused:
                task.example_labels(row, 7)
            assert "row 7" in refused.value.message, refused.value.message
            assert fragment in refused.value.message, (fragment, refused.value.message)

    def test_every_training_row_is_accepted(self, plugins: Plugins) -> None:
        task = plugins.task(self.task_name)
        for row_number, row in enumerate(self.train_rows, start=1):
            assert task.example_labels(row, row_number), f"row {row_number} has no labels"

    def test_the_serving_half_imports_no_torch(self, plugins: Plugins) -> None:
        module = plugins.task(self.task_name).__class__.__module__
        probe = (
            f"import sys, {module}; "
            "heavy = sorted({'torch', 'transformers', 'optimum'} & set(sys.modules)); "
            "print(','.join(heavy))"
        )
        found = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, check=True
        ).stdout.strip()
        assert not found, f"importing {module} imports {found}; import them inside methods"

    def test_fine_tune_export_and_serve(self, published: dict[str, Any]) -> None:
        job = published["job"]
        assert job.state == fpb.JOB_STATE_SUCCEEDED, job.error
        assert job.result.version == "1"
        assert job.result.promoted
        assert job.result.format in ("onnx-int8", "onnx-fp32")
        assert job.result.fp32_metrics, "the job must report validation metrics"
        assert job.result.gate, "the job must say what the accuracy gate decided"

    def test_served_answers_equal_the_task_runtime_on_the_published_model(
        self, published: dict[str, Any], plugins: Plugins
    ) -> None:
        version = ModelRepository(published["home"] / "models").resolve(MODEL_NAME)
        assert version.manifest.task == self.task_name
        session, runtime = open_model(
            plugins.task(self.task_name), version.path, MODEL_FILE, version.manifest
        )
        inputs = inputs_from_pb(self.serving_inputs, len(self.serving_inputs))
        encoded = runtime.encode(inputs)
        outputs = encoded.per_input(session.run(None, encoded.feeds))
        expected = runtime.decode(outputs, encoded, 0)
        served = published["results"]
        assert len(served) == len(expected)
        for got, want in zip(served, expected, strict=True):
            assert [s.label for s in got.labels] == [s.label for s in want.labels]
            np.testing.assert_allclose(
                [s.score for s in got.labels], [s.score for s in want.labels], atol=1e-5
            )
            assert [(s.start, s.end, s.label) for s in got.spans] == [
                (s.start, s.end, s.label) for s in want.spans
            ]

    def test_bad_inputs_get_invalid_argument(self, published: dict[str, Any]) -> None:
        for index, (code, details) in enumerate(published["bad_inputs"]):
            fragment = self.bad_inputs[index][1]
            assert code == grpc.StatusCode.INVALID_ARGUMENT, (index, code, details)
            assert fragment in details, (fragment, details)
        assert published["still_serving"], "the server stopped answering after bad inputs"

    # -- the run behind `published` --------------------------------------------------------

    async def _fine_tune_and_serve(self, base: Path, home: Path) -> dict[str, Any]:
        settings = load_settings(
            home=home,
            host="127.0.0.1",
            port=0,
            plugins=list(self.plugin_modules),
            train_threads=1,
            base_dirs=[base],
        )
        running = await start_server(settings, build_plugins(self.plugin_modules))
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                return {"home": home, "base": base, **await self._exercise(channel, base)}
        finally:
            await running.stop(0)

    async def _exercise(self, channel: aio.Channel, base: Path) -> dict[str, Any]:
        jobs = finetuning_pb2_grpc.FineTuningStub(channel)
        data = "".join(json.dumps(row) + "\n" for row in self.train_rows).encode()

        async def upload() -> Any:
            header = fpb.DatasetHeader(task=self.task_name, filename="train.jsonl")
            yield fpb.UploadDatasetRequest(header=header)
            yield fpb.UploadDatasetRequest(chunk=data)

        dataset = await jobs.UploadDataset(upload())
        job = await jobs.CreateJob(
            fpb.CreateJobRequest(
                task=self.task_name,
                base_path=str(base),
                dataset_id=dataset.id,
                model_name=MODEL_NAME,
                hyperparameters=self.hyperparameters,
                auto_promote=True,
            )
        )
        async for _ in jobs.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=self.timeout_s):
            pass
        job = await jobs.GetJob(fpb.GetJobRequest(id=job.id))
        if job.state != fpb.JOB_STATE_SUCCEEDED:
            return {"job": job, "results": [], "bad_inputs": [], "still_serving": False}

        inference = inference_pb2_grpc.InferenceStub(channel)
        reply = await inference.Classify(
            ipb.ClassifyRequest(model=MODEL_NAME, inputs=list(self.serving_inputs))
        )
        refused = []
        for bad, _ in self.bad_inputs:
            try:
                await inference.Classify(ipb.ClassifyRequest(model=MODEL_NAME, inputs=[bad]))
                refused.append((grpc.StatusCode.OK, "answered"))
            except aio.AioRpcError as error:
                refused.append((error.code(), error.details() or ""))
        again = await inference.Classify(
            ipb.ClassifyRequest(model=MODEL_NAME, inputs=list(self.serving_inputs)[:1])
        )
        return {
            "job": job,
            "results": list(reply.results),
            "bad_inputs": refused,
            "still_serving": bool(again.results),
        }
