"""The Node.js example client (examples/node) against edgetune."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from client_tools import ROOT, require, run
from fakes import sentiment_rows

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
