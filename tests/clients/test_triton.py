"""tritonclient[grpc], unchanged and in its own virtual environment, against edgetune."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from client_tools import ROOT, require, run
from fakes import publish_copy
from grpc import aio

from edgetune.server.app import RunningServer, start_server
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

TEXTS = ["the movie was good", "terrible acting", "i love this film"]


@pytest.fixture
def with_broken(repository: ModelRepository) -> None:
    """A second model, "broken", whose model.onnx no longer matches its manifest: it fails
    to load at start-up."""

    def corrupt(staged: Path) -> None:
        with (staged / "model.onnx").open("r+b") as f:
            f.seek(100)
            f.write(b"corrupt")

    publish_copy(repository, repository.resolve("tiny"), "broken", corrupt)


@pytest.fixture
async def started(with_broken, settings, plugins) -> AsyncIterator[RunningServer]:
    running = await start_server(settings, plugins)
    yield running
    await running.stop(0)


async def test_tritonclient_matches_classify(started) -> None:
    python = require(ROOT / ".venv-triton" / "bin" / "python", "the tritonclient environment")
    out = await run(
        python,
        ROOT / "tests" / "clients" / "triton_check.py",
        f"127.0.0.1:{started.port}",
        "tiny",
        *TEXTS,
        "--ready-of=no-such-model",
        "--ready-of=broken",
    )
    seen = json.loads(out)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    # Ready right after start-up (no request loaded it); not for an unknown or broken model.
    assert seen["ready_of"] == {"tiny": True, "no-such-model": False, "broken": False}
    assert seen["metadata"]["name"] == "tiny" and seen["metadata"]["versions"] == ["1"]
    assert seen["metadata"]["inputs"][0]["name"] == "text"
    assert seen["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "wrong_datatype": "StatusCode.INVALID_ARGUMENT",
    }

    async with aio.insecure_channel(f"127.0.0.1:{started.port}") as channel:
        reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
            ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in TEXTS])
        )
    labels = ["negative", "neutral", "positive"]
    assert seen["labels"] == [r.labels[0].label for r in reply.results]
    expected = [[{s.label: s.score for s in r.labels}[n] for n in labels] for r in reply.results]
    np.testing.assert_allclose(seen["scores"], expected, rtol=1e-6)
