"""The data-set quota holds: for concurrent uploads (reserved chunk by chunk, not computed
once per upload), for inline examples, for requests refused for another field (nothing is
stored for them), and after a crash mid-upload (the partial file is removed at start-up
instead of counting against the quota forever)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
from pathlib import Path

import grpc
import pytest
from fakes import jsonl, sentiment_rows
from grpc import aio

from edgetune.server.app import start_server
from edgetune.training.datasets import folder_bytes
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

TASK = "text-classification"


async def upload(stub, data: bytes, chunk: int = 16_384) -> pb.Dataset:
    async def messages():
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(task=TASK, filename="t.jsonl"))
        for start in range(0, len(data), chunk):
            yield pb.UploadDatasetRequest(chunk=data[start : start + chunk])

    return await stub.UploadDataset(messages())


def stored_bytes(settings) -> int:
    return sum(folder_bytes(p) for p in settings.datasets_dir.glob("ds_*"))


async def test_concurrent_uploads_cannot_pass_the_quota_together(settings, plugins) -> None:
    files = [jsonl(sentiment_rows(3000, seed=seed)) for seed in range(6)]  # ~150 kB each
    settings = settings.replace(
        datasets_quota_mb=1.3 * len(files[0]) / 2**20
    )  # room for one, not two
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            outcomes = await asyncio.gather(
                *(upload(stub, data) for data in files), return_exceptions=True
            )
        refused = [o for o in outcomes if isinstance(o, aio.AioRpcError)]
        assert len(refused) >= 5, outcomes
        assert all(o.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for o in refused)
        assert "datasets_quota_mb" in refused[0].details()
        assert stored_bytes(settings) <= settings.limits.datasets_quota_mb * 2**20
        assert not any((settings.datasets_dir / ".incoming").iterdir())
    finally:
        await running.stop(0)


async def test_inline_examples_count_against_the_quota_and_refused_jobs_store_nothing(
    settings, plugins, tiny_bert
) -> None:
    settings = settings.replace(datasets_quota_mb=20_000 / 2**20)
    running = await start_server(settings, plugins)
    rows = [pb.Example(**r) for r in sentiment_rows(2000)]  # ~70 kB of JSONL
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            with pytest.raises(aio.AioRpcError) as bad_base:
                await stub.CreateJob(
                    pb.CreateJobRequest(
                        task=TASK,
                        base_path="/etc",
                        examples=pb.Examples(examples=rows[:20]),
                        model_name="m",
                    )
                )
            assert bad_base.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "base_path" in bad_base.value.details()
            assert "/etc" in bad_base.value.details()
            assert stored_bytes(settings) == 0  # refused before anything was stored
            with pytest.raises(aio.AioRpcError) as bad_split:
                await stub.CreateJob(
                    pb.CreateJobRequest(
                        task=TASK,
                        base_path=str(tiny_bert),
                        examples=pb.Examples(examples=rows[:20]),
                        validation_split=0.9,
                        model_name="m",
                    )
                )
            assert bad_split.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "validation_split" in bad_split.value.details()
            assert stored_bytes(settings) == 0  # the last field checked before storing
            with pytest.raises(aio.AioRpcError) as over:
                await stub.CreateJob(
                    pb.CreateJobRequest(
                        task=TASK,
                        base_path=str(tiny_bert),
                        examples=pb.Examples(examples=rows),
                        model_name="m",
                    )
                )
            assert over.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "datasets_quota_mb" in over.value.details()
            assert stored_bytes(settings) == 0
    finally:
        await running.stop(0)


def test_a_partial_upload_is_removed_when_the_server_starts_again(
    tmp_path: Path, seeded_models
) -> None:
    from faults.server_process import ServerProcess

    home = tmp_path / "home"
    shutil.copytree(seeded_models, home / "models")
    server = ServerProcess(home, EDGETUNE_DATASETS_QUOTA_MB="1").start()
    hold = threading.Event()
    sent = threading.Event()

    def messages():
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(task=TASK, filename="t.jsonl"))
        yield pb.UploadDatasetRequest(chunk=b"x" * 700_000)
        sent.set()
        hold.wait(60)

    def client() -> None:
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            with contextlib.suppress(grpc.RpcError):  # the server is killed under it
                stub.UploadDataset(messages(), timeout=60)

    thread = threading.Thread(target=client)
    thread.start()
    incoming = home / "datasets" / ".incoming"
    try:
        assert sent.wait(30)
        # The chunk reaches the server's file (written as it arrives) before the kill.
        for _ in range(600):
            if incoming.is_dir() and folder_bytes(incoming) >= 700_000:
                break
            threading.Event().wait(0.05)  # polling a file another process writes
        assert folder_bytes(incoming) >= 700_000
        server.kill9()
        hold.set()
        thread.join(30)
        assert folder_bytes(incoming) >= 700_000  # what a crash leaves behind

        server.start()
        assert not incoming.exists() or not any(incoming.iterdir())
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)

            def small():
                yield pb.UploadDatasetRequest(
                    header=pb.DatasetHeader(task=TASK, filename="t.jsonl")
                )
                yield pb.UploadDatasetRequest(chunk=jsonl(sentiment_rows(4000)))  # ~140 kB

            assert stub.UploadDataset(small(), timeout=60).rows == 4000  # fits: 1 MiB quota
    finally:
        hold.set()
        server.stop()
