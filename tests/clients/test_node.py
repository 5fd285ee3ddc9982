"""The Node.js example client (examples/node) against edgetune."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from client_tools import ROOT, require, run
from fakes import jsonl, sentiment_rows

from edgetune.server.app import RunningServer, start_server
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

CLIENT = ROOT / "examples" / "node" / "client.js"


def node() -> str:
    found = shutil.which("node")
    require(Path(found or "/nonexistent/node"), "Node.js")
    require(
        ROOT / "examples" / "node" / "node_modules" / "@grpc" / "grpc-js",
        "the Node example's packages",
    )
    return str(found)


async def test_node_classify_matches_classify(server, channel) -> None:
    texts = ["the movie was good", "terrible acting"]
    out = await run(
        node(),
        CLIENT,
        "classify",
        "--address",
        f"127.0.0.1:{server.port}",
        "--model",
        "tiny",
        *texts,
    )
    rows = [json.loads(line) for line in out.splitlines()]
    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in texts])
    )
    assert [r["text"] for r in rows] == texts
    for row, result in zip(rows, reply.results, strict=True):
        assert row["label"] == result.labels[0].label
        expected = {s.label: s.score for s in result.labels}
        np.testing.assert_allclose(
            [row["scores"][k] for k in expected], list(expected.values()), rtol=1e-6
        )


async def test_node_reports_errors_with_the_status(server) -> None:
    import asyncio

    process = await asyncio.create_subprocess_exec(
        node(),
        str(CLIENT),
        "classify",
        "--address",
        f"127.0.0.1:{server.port}",
        "--model",
        "nope",
        "x",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 1
    assert stderr.decode().strip() == "error: NOT_FOUND: model 'nope' not found"


async def test_node_watches_a_fine_tuning_job(server, channel, tiny_bert) -> None:
    jobs = finetuning_pb2_grpc.FineTuningStub(channel)
    job = await jobs.CreateJob(
        fpb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_bert),
            model_name="from-node",
            examples=fpb.Examples(examples=[fpb.Example(**r) for r in sentiment_rows(40)]),
            hyperparameters=fpb.Hyperparameters(
                epochs=1, learning_rate=3e-3, batch_size=8, max_length=16
            ),
        )
    )
    out = await run(
        node(), CLIENT, "watch", "--address", f"127.0.0.1:{server.port}", job.id, limit_s=240
    )
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["state"] == "JOB_STATE_SUCCEEDED"
    assert any(e["total_steps"] for e in events) and any("accuracy" in e["metrics"] for e in events)


@pytest.fixture
async def remote(settings, plugins) -> AsyncIterator[RunningServer]:
    """A server that reads base models from its own home only: the client's folders are
    not its to read."""
    settings = settings.replace(base_dirs=[])
    running = await start_server(settings, plugins)
    yield running
    await running.stop(0)


async def test_node_uploads_a_base_fine_tunes_and_classifies(remote, tiny_bert, tmp_path) -> None:
    workdir = tmp_path / "node-client"
    workdir.mkdir()
    data = workdir / "train.jsonl"
    data.write_bytes(jsonl(sentiment_rows(40)))
    texts = ["good fun", "bad plot"]
    process = await asyncio.create_subprocess_exec(
        node(), str(CLIENT), "finetune", "--address", f"127.0.0.1:{remote.port}",
        "--base", str(tiny_bert), "--data", str(data), "--task", "text-classification",
        "--model", "from-node", "--epochs", "2", "--lr", "0.003", *texts,
        cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(300):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()[-3000:]
    started, *answers = [json.loads(line) for line in stdout.decode().splitlines()]
    assert started["base"].startswith("node-") and started["job"].startswith("job_")
    assert [a["text"] for a in answers] == texts
    assert all(a["version"] == "1" and a["label"] in {"negative", "positive"} for a in answers)
    assert (remote.registry.repository.root / "from-node").is_dir()
