"""Base models over the wire: UploadBase, ListBases, DeleteBase, and fine-tuning from an
uploaded base by clients that share no files with the server."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from fakes import jsonl, sentiment_rows
from grpc import aio

from edgetune.server.app import RunningServer, start_server
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
FAST = pb.Hyperparameters(epochs=2, learning_rate=3e-3, batch_size=8, max_length=16)


def declared(folder: Path, names: list[str] | None = None) -> list[pb.BaseFile]:
    paths = sorted(p for p in folder.iterdir() if p.is_file())
    return [
        pb.BaseFile(
            name=p.name,
            size_bytes=p.stat().st_size,
            sha256=hashlib.sha256(p.read_bytes()).hexdigest(),
        )
        for p in paths
        if names is None or p.name in names
    ]


async def messages(
    name: str, folder: Path, files: list[pb.BaseFile], chunk: int = 4096
) -> AsyncIterator[pb.UploadBaseRequest]:
    yield pb.UploadBaseRequest(header=pb.BaseHeader(name=name, files=files))
    for item in files:
        data = (folder / item.name).read_bytes() if (folder / item.name).exists() else b""
        for start in range(0, len(data), chunk):
            part = pb.BaseChunk(file=item.name, data=data[start : start + chunk])
            yield pb.UploadBaseRequest(chunk=part)


@pytest.fixture
async def remote(settings, plugins) -> AsyncIterator[RunningServer]:
    """A server that reads base models from its own home only (no base_dirs)."""
    settings = settings.replace(base_dirs=[])
    running = await start_server(settings, plugins)
    yield running
    await running.stop(0)


async def test_upload_list_fine_tune_from_and_delete_a_base(remote, tiny_bert, settings) -> None:
    async with aio.insecure_channel(f"127.0.0.1:{remote.port}") as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        # The server cannot read the client's folder itself...
        with pytest.raises(aio.AioRpcError) as outside:
            await stub.CreateJob(
                pb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(20)]),
                    model_name="x",
                )
            )
        assert outside.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "outside the folders base models are taken from" in outside.value.details()
        # ...but takes it uploaded.
        files = declared(tiny_bert)
        base = await stub.UploadBase(messages("tiny-base", tiny_bert, files, chunk=1000))
        assert base.name == "tiny-base"
        assert base.size_bytes == sum(f.size_bytes for f in files)
        assert (settings.bases_dir / "tiny-base" / "config.json").is_file()
        listed = await stub.ListBases(pb.ListBasesRequest())
        assert [(b.name, len(b.files)) for b in listed.bases] == [("tiny-base", len(files))]
        assert {f.sha256 for f in listed.bases[0].files} == {f.sha256 for f in files}

        job = await stub.CreateJob(
            pb.CreateJobRequest(
                task="text-classification",
                base_path="tiny-base",
                examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(40)]),
                model_name="from-upload",
                hyperparameters=FAST,
            )
        )
        async for _ in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=240):
            pass
        final = await stub.GetJob(pb.GetJobRequest(id=job.id))
        assert final.state == pb.JOB_STATE_SUCCEEDED, final.error

        with pytest.raises(aio.AioRpcError) as again:
            await stub.UploadBase(messages("tiny-base", tiny_bert, files))
        assert again.value.code() == grpc.StatusCode.ALREADY_EXISTS
        await stub.DeleteBase(pb.DeleteBaseRequest(name="tiny-base"))
        assert not (await stub.ListBases(pb.ListBasesRequest())).bases
        with pytest.raises(aio.AioRpcError) as gone:
            await stub.DeleteBase(pb.DeleteBaseRequest(name="tiny-base"))
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def with_file(folder: Path, tmp_path: Path, name: str, data: bytes) -> Path:
    copy = tmp_path / "base"
    shutil.copytree(folder, copy)
    (copy / name).write_bytes(data)
    return copy


async def test_every_bad_upload_is_refused_naming_what_is_wrong(
    remote, tiny_bert, tmp_path
) -> None:
    good = declared(tiny_bert)
    weights = next(f for f in good if f.name.endswith(".safetensors"))
    pickled = with_file(tiny_bert, tmp_path, "pytorch_model.bin", b"\x80\x04pickle")
    wrong_sha = pb.BaseFile(name=weights.name, size_bytes=weights.size_bytes, sha256="0" * 64)
    cases = [
        ("tiny", declared(pickled), grpc.StatusCode.INVALID_ARGUMENT, "'pytorch_model.bin' is a pickle checkpoint"),
        ("tiny", [pb.BaseFile(name="../config.json", size_bytes=2, sha256="0" * 64)], grpc.StatusCode.INVALID_ARGUMENT, "a file name without folders is required"),
        ("tiny", [pb.BaseFile(name="sub/config.json", size_bytes=2, sha256="0" * 64)], grpc.StatusCode.INVALID_ARGUMENT, "'sub/config.json': a file name without folders"),
        ("tiny", [pb.BaseFile(name="run.py", size_bytes=2, sha256="0" * 64)], grpc.StatusCode.INVALID_ARGUMENT, "'run.py' is not a file a base takes"),
        ("../up", good, grpc.StatusCode.INVALID_ARGUMENT, "header.name '../up' must be"),
        ("tiny", [wrong_sha if f.name == weights.name else f for f in good], grpc.StatusCode.INVALID_ARGUMENT, f"file '{weights.name}': its sha256 is"),
        ("tiny", [f for f in good if f.name == "config.json"], grpc.StatusCode.INVALID_ARGUMENT, "has no safetensors weights"),
        ("tiny", [], grpc.StatusCode.INVALID_ARGUMENT, "header.files is empty"),
    ]  # fmt: skip
    async with aio.insecure_channel(f"127.0.0.1:{remote.port}") as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        for name, files, code, message in cases:
            folder = pickled  # tiny_bert's files and a pickle beside them
            with pytest.raises(aio.AioRpcError) as refused:
                await stub.UploadBase(messages(name, folder, files))
            assert refused.value.code() == code, (name, message)
            assert message in refused.value.details(), refused.value.details()


async def test_size_limits_and_the_quota_are_checked_on_the_header(
    settings, plugins, tiny_bert
) -> None:
    files = declared(tiny_bert)
    largest = max(f.size_bytes for f in files)
    total = sum(f.size_bytes for f in files)
    for field, value, message in [
        ("max_base_file_bytes", largest - 1, "(max_base_file_bytes)"),
        ("max_base_bytes", total - 1, "(max_base_bytes)"),
        ("bases_quota_mb", (total - 1) / 2**20, "(bases_quota_mb)"),
    ]:
        running = await start_server(settings.replace(**{field: value}), plugins)
        try:
            async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = finetuning_pb2_grpc.FineTuningStub(channel)
                with pytest.raises(aio.AioRpcError) as refused:
                    await stub.UploadBase(messages("big", tiny_bert, files))
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert message in refused.value.details()
        finally:
            await running.stop(0)
    assert not (settings.bases_dir / "big").exists()
    assert not any((settings.bases_dir / ".uploads").glob("*"))  # nothing left behind


async def test_the_cli_uploads_a_folder_the_server_cannot_read(remote, tiny_bert, tmp_path) -> None:
    elsewhere = tmp_path / "client"  # another working directory and home
    elsewhere.mkdir()
    data = elsewhere / "train.jsonl"
    data.write_bytes(jsonl(sentiment_rows(40)))
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(elsewhere / "home"),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    command = [
        sys.executable, "-m", "edgetune", "finetune", "--address", f"127.0.0.1:{remote.port}",
        "--base", str(tiny_bert), "--task", "text-classification", "--data", str(data),
        "--name", "cli-upload", "--epochs", "2", "--learning-rate", "3e-3", "--batch-size", "8",
        "--max-length", "16",
    ]  # fmt: skip
    import asyncio

    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=elsewhere,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(300):
        out, _ = await process.communicate()
    text = " ".join(out.decode().split())
    assert process.returncode == 0, text[-3000:]
    assert "the server cannot use" in text and "uploading it" in text
    assert "uploaded" in text and "as base tiny-bert" in text
    async with aio.insecure_channel(f"127.0.0.1:{remote.port}") as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        (base,) = (await stub.ListBases(pb.ListBasesRequest())).bases
        assert base.name.startswith("tiny-bert")
        (job,) = (await stub.ListJobs(pb.ListJobsRequest())).jobs
        assert job.state == pb.JOB_STATE_SUCCEEDED and job.model_name == "cli-upload"


async def test_import_model_uploads_the_folder_and_the_server_imports_it(
    remote, tiny_bert, tmp_path
) -> None:
    elsewhere = tmp_path / "client"
    elsewhere.mkdir()
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(elsewhere / "home"),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
    }
    import asyncio

    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgetune", "import-model", "--address",
        f"127.0.0.1:{remote.port}", "--name", "imported", "--task", "text-classification",
        "--labels", "bad,good,meh", str(tiny_bert),
        cwd=elsewhere, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(300):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    assert (
        "imported imported version 1 (text-classification, labels: bad, good, meh)" in out.decode()
    )
    assert not (elsewhere / "home" / "models").exists()  # imported there, not here
    async with aio.insecure_channel(f"127.0.0.1:{remote.port}") as channel:
        from edgetune.v1 import inference_pb2 as ipb
        from edgetune.v1 import inference_pb2_grpc, models_pb2, models_pb2_grpc

        models = models_pb2_grpc.ModelsStub(channel)
        reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
            ipb.ClassifyRequest(model="imported", inputs=[ipb.Input(text="good fun")])
        )
        assert {s.label for s in reply.results[0].labels} == {"bad", "good", "meh"}
        for request, code, message in [
            (models_pb2.ImportModelRequest(name="m", task="text-classification", base="nope"), grpc.StatusCode.NOT_FOUND, "base 'nope' not found"),
            (models_pb2.ImportModelRequest(name="m", task="text-classification", base="../x"), grpc.StatusCode.INVALID_ARGUMENT, "base '../x' must be"),
            (models_pb2.ImportModelRequest(name="m", task="no-such-task", base="x"), grpc.StatusCode.NOT_FOUND, "no-such-task"),
            (models_pb2.ImportModelRequest(name="m", base="x"), grpc.StatusCode.INVALID_ARGUMENT, "task is required"),
        ]:  # fmt: skip
            with pytest.raises(aio.AioRpcError) as refused:
                await models.ImportModel(request)
            assert refused.value.code() == code and message in refused.value.details()
