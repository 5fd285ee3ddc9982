"""The C++ example client (examples/cpp, built against Debian's gRPC) against edgetune."""

from __future__ import annotations

import pytest
from client_tools import ROOT, require, run

from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc


async def test_cpp_classify_matches_classify(server, channel) -> None:
    binary = require(
        ROOT / "examples" / "cpp" / "build" / "classify", "the C++ example (examples/cpp/build.sh)"
    )
    texts = ["the movie was good", "terrible acting"]
    out = await run(binary, f"127.0.0.1:{server.port}", "tiny", *texts)
    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in texts], top_k=1)
    )
    lines = [line.split("\t") for line in out.splitlines()]
    assert [label for label, _ in lines] == [r.labels[0].label for r in reply.results]
    assert [float(score) for _, score in lines] == pytest.approx(
        [r.labels[0].score for r in reply.results], rel=1e-5
    )
