"""Fine-tuning over gRPC with a real training process on the tiny BERT."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest
from fakes import jsonl, sentiment_rows
from grpc import aio

from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

FAST = pb.Hyperparameters(epochs=2, learning_rate=3e-3, batch_size=8, max_length=16)


@pytest.fixture
def finetuning(channel: aio.Channel) -> finetuning_pb2_grpc.FineTuningStub:
    return finetuning_pb2_grpc.FineTuningStub(channel)


TASK = "text-classification"


async def upload(
    stub, data: bytes, filename: str = "train.jsonl", chunk: int = 100, task: str = TASK
) -> pb.Dataset:
    async def messages():
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(task=task, filename=filename))
        for start in range(0, len(data), chunk):
            yield pb.UploadDatasetRequest(chunk=data[start : start + chunk])

    return await stub.UploadDataset(messages())


async def watch_to_end(stub, job_id: str) -> list[pb.JobEvent]:
    events = []
    async for event in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=240):
        events.append(event)
    return events


async def test_upload_train_export_publish_and_serve(
    finetuning, channel, tiny_bert, settings
) -> None:
    dataset = await upload(finetuning, jsonl(sentiment_rows(80)))
    assert dataset.rows == 80
    assert dict(dataset.label_counts) == {"negative": 40, "positive": 40}
    assert dataset.id.startswith("ds_") and len(dataset.sha256) == 64
    again = await upload(finetuning, jsonl(sentiment_rows(80)), chunk=7)
    assert again.id == dataset.id  # content-addressed

    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            model_name="sentiment",
            hyperparameters=FAST,
            idempotency_key="first",
            auto_promote=True,
        )
    )
    assert job.state in (pb.JOB_STATE_QUEUED, pb.JOB_STATE_RUNNING)
    assert job.hyperparameters.epochs == 2 and job.hyperparameters.weight_decay == pytest.approx(
        0.01
    )
    same = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            model_name="sentiment",
            idempotency_key="first",
        )
    )
    assert same.id == job.id

    events = await watch_to_end(finetuning, job.id)
    states = [pb.JobState.Name(e.state) for e in events]
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, [e.message for e in events])
    for state in ("VALIDATING", "QUEUED", "RUNNING", "EXPORTING", "SUCCEEDED"):
        assert f"JOB_STATE_{state}" in states
    assert states[-1] == "JOB_STATE_SUCCEEDED"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    progress = [e.progress for e in events if e.progress.total_steps]
    assert progress and progress[-1].step == progress[-1].total_steps == 2 * 8  # 64 train / 8
    evaluations = [e for e in events if "accuracy" in e.metrics]
    assert len(evaluations) == 2
    assert {"accuracy", "precision", "recall", "f1", "f1/positive"} <= set(evaluations[0].metrics)

    result = final.result
    assert (result.model_name, result.version, result.promoted) == ("sentiment", "1", True)
    assert result.format in ("onnx-int8", "onnx-fp32") and result.gate
    assert "accuracy" in result.fp32_metrics and result.latency_ms > 0
    # The exported model, fed by the serving tokenizer, scores as the best torch checkpoint
    # did (one of the 16 validation examples may flip on float rounding).
    assert abs(result.fp32_metrics["accuracy"] - final.metrics["accuracy"]) <= 1 / 16 + 1e-9
    assert final.started and final.finished
    assert not (settings.jobs_dir / job.id).exists()  # work folder cleaned up

    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="sentiment", inputs=[ipb.Input(text="great fun")])
    )
    assert reply.version == "1"
    assert {s.label for s in reply.results[0].labels} == {"negative", "positive"}

    listed = await finetuning.ListJobs(pb.ListJobsRequest(states=[pb.JOB_STATE_SUCCEEDED]))
    assert [j.id for j in listed.jobs] == [job.id]


async def test_inline_examples_and_a_repository_base(finetuning, channel, settings) -> None:
    rows = sentiment_rows(40, seed=1)
    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            # No task: it continues the repository model's task.
            base_model=pb.ModelRef(name="tiny"),  # the seeded repository model keeps its weights
            examples=pb.Examples(examples=[pb.Example(**r) for r in rows]),
            validation_split=0.25,
            model_name="inline",
            hyperparameters=FAST,
        )
    )
    events = await watch_to_end(finetuning, job.id)
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, [e.message for e in events]
    assert final.base_model == "tiny:latest" and final.task == "text-classification"
    assert not final.result.promoted
    assert any("validating on 10" in e.message for e in events)
    # Started from a version: that version is measured on the same 10 validation rows.
    assert set(final.result.previous_metrics) >= {"accuracy", "f1"}
    assert final.result.previous_comparison.startswith("tiny version 1 on 10 validation rows")


BAD_FILES = [
    (
        b'{"text": "good", "label": "a"}\n{"text": "x", "label": "b"}\nnot json\n',
        "train.jsonl",
        "row 3: not valid JSON",
    ),
    (
        b'{"text": "good", "label": "a"}\n{"label": "b"}\n',
        "train.jsonl",
        "row 2: field 'text' is missing",
    ),
    (
        b'{"text": "good", "label": "a"}\n{"text": "   ", "label": "b"}\n',
        "train.jsonl",
        "row 2: field 'text' is empty",
    ),
    (
        b'{"text": "good", "label": "a"}\n{"text": "ok"}\n',
        "train.jsonl",
        "row 2: field 'label' is missing",
    ),
    (
        b'{"text": "good", "label": "a"}\n{"text": "caf\xe9", "label": "b"}\n',
        "train.jsonl",
        "row 2: not valid UTF-8",
    ),
    (b"text,label\ngood,a\n\xff\xfe,b\n", "train.csv", "row 2: not valid UTF-8"),
    (b"text,label\ngood,a\nbad,b,extra\n", "train.csv", "row 2: more values than header columns"),
    (b"", "train.jsonl", "data set is empty"),
    (b"x" * 5000, "train.jsonl", "over the size limit of 4096 bytes"),
    (
        b'{"text": "a", "label": "b"}\n',
        "train.parquet",
        "cannot tell the format of 'train.parquet'",
    ),
    # The header alone: the server refuses it before any chunk, and a client still writing
    # chunks then may see its own write fail (INTERNAL) instead of the server's status.
    (b"", "no-task.jsonl", "header.task is required (tasks: "),
]


@pytest.mark.parametrize(("data", "filename", "message"), BAD_FILES)
async def test_bad_uploads_name_the_row(settings, plugins, data, filename, message) -> None:
    from edgetune.server.app import start_server

    settings = settings.replace(max_dataset_bytes=4096)
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            with pytest.raises(aio.AioRpcError) as caught:
                await upload(stub, data, filename, task="" if filename == "no-task.jsonl" else TASK)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert message in caught.value.details()
        assert not any((settings.datasets_dir / ".incoming").iterdir())  # nothing left behind
    finally:
        await running.stop(0)


async def test_bad_jobs_are_refused_before_training(finetuning, tiny_bert, tmp_path) -> None:
    single = await upload(finetuning, jsonl([{"text": "good", "label": "a"}] * 4))
    good = await upload(finetuning, jsonl(sentiment_rows(20)))
    odd_validation = await upload(
        finetuning,
        jsonl([{"text": "good", "label": "positive"}, {"text": "meh", "label": "neutral"}]),
    )
    base = str(tiny_bert)
    cases = [
        (
            dict(base_path=base, dataset_id=single.id, model_name="m"),
            "training data has a single class 'a': at least two are needed",
        ),
        (
            dict(
                base_path=base,
                dataset_id=good.id,
                validation_dataset_id=odd_validation.id,
                model_name="m",
            ),
            "validation row 2: label 'neutral' does not occur in the training data",
        ),
        (
            dict(base_path=base, dataset_id="ds_nope", model_name="m"),
            "data set 'ds_nope' not found",
        ),
        (dict(base_path=base, dataset_id=good.id), "model_name is required"),
        (dict(dataset_id=good.id, model_name="m"), "base_path or base_model is required"),
        (
            dict(base_path=str(tmp_path), dataset_id=good.id, model_name="m"),
            "is not a transformers model folder",
        ),
        (dict(base_path=base, model_name="m"), "dataset_id or examples is required"),
        (
            dict(base_path=base, dataset_id=good.id, model_name="../x"),
            "model_name '../x' is not valid",
        ),
        (
            dict(
                base_path=base,
                dataset_id=good.id,
                model_name="m",
                hyperparameters=pb.Hyperparameters(learning_rate=5),
            ),
            "hyperparameters.learning_rate",
        ),
        (
            dict(base_path=base, dataset_id=good.id, model_name="m", validation_split=0.9),
            "validation_split",
        ),
        (
            dict(base_path=base, dataset_id=good.id, model_name="m", task="nope"),
            "task 'nope' is not registered",
        ),
        (
            dict(base_model=pb.ModelRef(name="ghost"), dataset_id=good.id, model_name="m"),
            "model 'ghost' not found",
        ),
        (
            dict(base_path=base, dataset_id=good.id, model_name="m", task=""),
            "task is required (tasks: ",
        ),
        (
            dict(
                base_path=base,
                dataset_id=good.id,
                model_name="m",
                task="multi-label-classification",
            ),
            f"dataset_id {good.id} was checked for task 'text-classification', not "
            "'multi-label-classification'",
        ),
    ]
    for fields, message in cases:
        request = {"task": TASK, **fields}
        if "base_model" in fields and not fields.get("task"):
            del request["task"]  # the base model's task, once it is found
        with pytest.raises(aio.AioRpcError) as caught:
            await finetuning.CreateJob(pb.CreateJobRequest(**request))
        assert caught.value.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.NOT_FOUND,
        ), message
        assert message in caught.value.details()


async def test_job_errors(finetuning) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.GetJob(pb.GetJobRequest(id="job_missing"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.ListJobs(pb.ListJobsRequest(page_token="garbage"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.UploadDataset(iter([pb.UploadDatasetRequest(chunk=b"x")]))
    assert "first UploadDataset message must be a header" in caught.value.details()


async def test_base_path_cannot_escape_the_base_folders(
    finetuning, settings, tiny_bert, tmp_path
) -> None:
    dataset = await upload(finetuning, jsonl(sentiment_rows(20)))
    outside = tmp_path.parent.parent.parent / "elsewhere"  # not under pytest's base temp
    link = settings.bases_dir / "sneaky"
    link.parent.mkdir(parents=True)
    link.symlink_to("/etc")
    cases = {
        "../models": "must not contain '..'",
        "/etc": "is outside the folders base models are taken from",
        str(outside): "is outside the folders base models are taken from",
        "sneaky": "is outside the folders base models are taken from",  # symlink out of bases/
        "": "base_path is empty",
    }
    for base_path, message in cases.items():
        with pytest.raises(aio.AioRpcError) as caught:
            await finetuning.CreateJob(
                pb.CreateJobRequest(
                    task=TASK, base_path=base_path, dataset_id=dataset.id, model_name="m"
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, base_path
        assert message in caught.value.details(), (base_path, caught.value.details())
    # A relative path names a folder under <home>/bases.
    (settings.bases_dir / "tiny").symlink_to(tiny_bert)  # a link that stays inside base_dirs
    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task=TASK,
            base_path="tiny",
            dataset_id=dataset.id,
            model_name="relative",
            hyperparameters=FAST,
        )
    )
    assert job.base_model == str(tiny_bert.resolve())
    await finetuning.CancelJob(pb.CancelJobRequest(id=job.id))


async def test_disk_quotas_for_data_sets_and_models(settings, plugins, tiny_bert) -> None:
    from edgetune.server.app import start_server

    first, second = jsonl(sentiment_rows(40, seed=1)), jsonl(sentiment_rows(40, seed=2))
    settings = settings.replace(datasets_quota_mb=(len(first) + len(second) // 2) / 2**20)
    settings = settings.replace(models_quota_mb=1 / 2**20)  # the seeded model alone is over it
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            stored = await upload(stub, first, chunk=1000)
            with pytest.raises(aio.AioRpcError) as over:
                await upload(stub, second, chunk=1000)
            assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "quota" in over.value.details() and "datasets_quota_mb" in over.value.details()
            assert not any((settings.datasets_dir / ".incoming").iterdir())  # nothing kept

            with pytest.raises(aio.AioRpcError) as full:
                await stub.CreateJob(
                    pb.CreateJobRequest(
                        task=TASK, base_path=str(tiny_bert), dataset_id=stored.id, model_name="m"
                    )
                )
            assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "models_quota_mb" in full.value.details()
    finally:
        await running.stop(0)


class _TouchOnUnpickle:
    """A pickle that, if anything ever loaded it, would create a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


async def test_a_pickle_only_base_is_refused_and_never_unpickled(
    finetuning, settings, tiny_bert, tmp_path
) -> None:
    import pickle

    from edgetune.errors import InvalidArgument as Refused
    from edgetune.exporters.onnx import import_model
    from edgetune.plugins.text_classification import TextClassification
    from edgetune.store import ModelRepository

    marker = tmp_path / "unpickled"
    folder = settings.bases_dir / "pickled"
    folder.mkdir(parents=True)
    shutil.copy(tiny_bert / "config.json", folder / "config.json")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(_TouchOnUnpickle(marker)))
    dataset = await upload(finetuning, jsonl(sentiment_rows(20)))
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.CreateJob(
            pb.CreateJobRequest(
                task=TASK, base_path="pickled", dataset_id=dataset.id, model_name="m"
            )
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "has no safetensors weights" in caught.value.details()
    with pytest.raises(Refused, match="never loaded"):
        import_model(ModelRepository(settings.models_dir), TextClassification(), "p", folder)
    assert not marker.exists()
