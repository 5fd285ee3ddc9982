"""tritonclient[grpc], unchanged and in its own virtual environment, against edgetune."""

from __future__ import annotations

import json

import numpy as np
from client_tools import ROOT, require, run

from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

TEXTS = ["the movie was good", "terrible acting", "i love this film"]


async def test_tritonclient_matches_classify(server, channel) -> None:
    python = require(ROOT / ".venv-triton" / "bin" / "python", "the tritonclient environment")
    await server.registry.load("tiny")
    out = await run(
        python,
        ROOT / "tests" / "clients" / "triton_check.py",
        f"127.0.0.1:{server.port}",
        "tiny",
        *TEXTS,
    )
    seen = json.loads(out)
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["metadata"]["name"] == "tiny" and seen["metadata"]["versions"] == ["1"]
    assert seen["metadata"]["inputs"][0]["name"] == "text"
    assert seen["errors"] == {
        "unknown_model": "StatusCode.NOT_FOUND",
        "wrong_datatype": "StatusCode.INVALID_ARGUMENT",
    }

    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in TEXTS])
    )
    labels = ["negative", "neutral", "positive"]
    assert seen["labels"] == [r.labels[0].label for r in reply.results]
    expected = [[{s.label: s.score for s in r.labels}[n] for n in labels] for r in reply.results]
    np.testing.assert_allclose(seen["scores"], expected, rtol=1e-6)
