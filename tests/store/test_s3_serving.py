"""Servers, training processes and the CLI over an S3 repository (moto's S3 server on
loopback, tests/conftest.py): serving and following a publish, a missing bucket, a
fine-tune job and import-model publishing into the bucket."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from fakes import publish_copy
from grpc import aio
from s3_helpers import objects, s3repo

from edgetune.plugins.manager import Plugins
from edgetune.server.app import start_server
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

REQUEST = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])


async def test_servers_over_the_bucket_serve_and_follow_a_publish(
    settings: Settings, plugins: Plugins, repository: ModelRepository, bucket: str, tmp_path: Path
) -> None:
    url = f"s3://{bucket}/models"
    writer = s3repo(bucket, tmp_path / "writer")
    publish_copy(writer, repository.resolve("tiny"), "tiny")
    serving = await start_server(settings.replace(home=tmp_path / "a", repository_url=url), plugins)
    follower = await start_server(
        settings.replace(home=tmp_path / "b", repository_url=url, repository_poll_s=0.1), plugins
    )
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{serving.port}") as serving_channel,
            aio.insecure_channel(f"127.0.0.1:{follower.port}") as follower_channel,
        ):
            on_serving = inference_pb2_grpc.InferenceStub(serving_channel)
            on_follower = inference_pb2_grpc.InferenceStub(follower_channel)
            assert (await on_serving.Classify(REQUEST)).version == "1"
            assert (await on_follower.Classify(REQUEST)).version == "1"
            cached = tmp_path / "b" / "cache" / "models" / bucket / "models" / "tiny" / "1"
            assert (cached / "model.onnx").is_file()
            # The first server's repository publishes version 2 into the bucket.
            publish_copy(serving.registry.repository, repository.resolve("tiny"), "tiny")
            deadline, versions = time.monotonic() + 60, []
            while time.monotonic() < deadline:
                versions.append((await on_follower.Classify(REQUEST, timeout=10)).version)
                if versions[-1] == "2":
                    break
                # The follower polls the bucket on its own clock; this polls its answers,
                # bounded by the deadline.
                await asyncio.sleep(0.05)
            assert versions[-1] == "2", versions[-5:]
            assert set(follower.registry.loaded) == {("tiny", 2)}
            assert (await on_serving.Classify(REQUEST)).version == "1"  # it does not poll
    finally:
        await follower.stop(0)
        await serving.stop(0)


async def test_a_client_of_a_server_over_a_missing_bucket_gets_a_clear_status(
    settings: Settings,
    plugins: Plugins,
    endpoint: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import grpc

    running = await start_server(
        settings.replace(home=tmp_path / "a", repository_url="s3://edgetune-gone/models"), plugins
    )
    # Start-up loading ("all") could not list the bucket: one line saying so, no traceback.
    listed = [r for r in caplog.records if "cannot list the models at start-up" in r.message]
    assert listed and "bucket 'edgetune-gone' does not exist" in listed[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info]
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(aio.AioRpcError) as raised:
                await inference_pb2_grpc.InferenceStub(channel).Classify(REQUEST)
        assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "bucket 'edgetune-gone' does not exist" in (raised.value.details() or "")
    finally:
        await running.stop(0)


async def test_a_fine_tune_job_publishes_into_the_bucket(
    settings: Settings, plugins: Plugins, tiny_bert: Path, bucket: str, tmp_path: Path
) -> None:
    from fakes import jsonl, sentiment_rows

    from edgetune.v1 import finetuning_pb2 as fpb
    from edgetune.v1 import finetuning_pb2_grpc

    # The training process is a child: it reaches the bucket through the same AWS_*
    # variables and EDGETUNE_REPOSITORY_URL, and publishes there, not into a folder.
    over_s3 = settings.replace(home=tmp_path / "a", repository_url=f"s3://{bucket}/models")
    running = await start_server(over_s3, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            finetuning = finetuning_pb2_grpc.FineTuningStub(channel)
            data = jsonl(sentiment_rows(40))

            async def messages() -> Any:
                yield fpb.UploadDatasetRequest(
                    header=fpb.DatasetHeader(task="text-classification", filename="t.jsonl")
                )
                yield fpb.UploadDatasetRequest(chunk=data)

            dataset = await finetuning.UploadDataset(messages())
            job = await finetuning.CreateJob(
                fpb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    dataset_id=dataset.id,
                    model_name="sentiment",
                    hyperparameters=fpb.Hyperparameters(
                        epochs=1, learning_rate=3e-3, batch_size=8, max_length=16
                    ),
                    auto_promote=True,
                )
            )
            async for _ in finetuning.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=300):
                pass
            final = await finetuning.GetJob(fpb.GetJobRequest(id=job.id))
            assert final.state == fpb.JOB_STATE_SUCCEEDED, final.error
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
                ipb.ClassifyRequest(model="sentiment", inputs=[ipb.Input(text="great fun")])
            )
            assert reply.version == "1"
    finally:
        await running.stop(0)
    stored = objects(bucket)
    assert "models/sentiment/1/manifest.json" in stored
    assert "models/sentiment/1/model.onnx" in stored
    assert stored["models/sentiment/aliases/latest"] == b"1\n"
    assert not (tmp_path / "a" / "models").exists()  # nothing went to a local repository


def test_import_model_on_the_command_line_publishes_into_the_bucket(
    bucket: str, tiny_bert: Path, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,  # the AWS_* variables the endpoint fixture set
        "EDGETUNE_HOME": str(tmp_path / "home"),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EDGETUNE_REPOSITORY_URL": f"s3://{bucket}/models",
    }
    command = [sys.executable, "-m", "edgetune", "import-model", "--name", "reviews"]
    command += ["--task", "text-classification", str(tiny_bert)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported reviews version 1" in result.stdout
    stored = objects(bucket)
    assert "models/reviews/1/manifest.json" in stored
    assert any(key.startswith("models/reviews/1/trainable/") for key in stored)
    version = s3repo(bucket, tmp_path / "reader").resolve("reviews")
    version.manifest.verify_files(version.path)  # every file, trainable/ too
