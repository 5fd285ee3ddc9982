"""The Go example client (examples/go, built with Debian's Go and gRPC-Go packages)
against edgetune, over edgetune.v1 and over KServe v2."""

from __future__ import annotations

import json

import numpy as np
import pytest
from client_tools import ROOT, require, run

from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc


async def test_go_classifies_over_both_protocols(server, channel) -> None:
    binary = require(
        ROOT / "examples" / "go" / "build" / "classify", "the Go example (examples/go/build.sh)"
    )
    texts = ["the movie was good", "terrible acting", "i love this film"]
    seen = json.loads(await run(binary, f"127.0.0.1:{server.port}", "tiny", *texts))
    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in texts])
    )
    assert seen["ready"] and seen["version"] == "1"
    best = [r.labels[0] for r in reply.results]
    assert [a["label"] for a in seen["classify"]] == [b.label for b in best]
    assert [a["score"] for a in seen["classify"]] == pytest.approx([b.score for b in best])
    assert seen["v2_labels"] == [b.label for b in best]
    labels = ["negative", "neutral", "positive"]
    expected = [[{s.label: s.score for s in r.labels}[n] for n in labels] for r in reply.results]
    np.testing.assert_allclose(seen["v2_scores"], expected, rtol=1e-6)


async def test_go_reports_the_servers_status(server) -> None:
    binary = require(
        ROOT / "examples" / "go" / "build" / "classify", "the Go example (examples/go/build.sh)"
    )
    with pytest.raises(AssertionError, match="error: NotFound: model 'nope' not found"):
        await run(binary, f"127.0.0.1:{server.port}", "nope", "text")
