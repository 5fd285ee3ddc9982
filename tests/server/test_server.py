"""edgetune.v1.Server, reflection, and graceful shutdown."""

from __future__ import annotations

import asyncio
import threading

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

import edgetune
from edgetune.server.app import start_server
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc, server_pb2_grpc
from edgetune.v1 import server_pb2 as pb


async def test_server_info(channel) -> None:
    info = await server_pb2_grpc.ServerStub(channel).GetServerInfo(pb.GetServerInfoRequest())
    assert info.version == edgetune.__version__
    assert [(p.name, p.origin) for p in info.plugins] == [
        ("edgetune.plugins.text_classification", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.multi_label", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.token_classification", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.image_classification", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.sentence_classification", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.readers", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.token_auth", pb.PLUGIN_ORIGIN_BUILTIN),
        ("edgetune.plugins.job_runners", pb.PLUGIN_ORIGIN_BUILTIN),
    ]
    assert [t.name for t in info.tasks] == [
        "image-classification",
        "multi-label-classification",
        "sentence-classification",
        "text-classification",
        "token-classification",
    ]
    task = next(t for t in info.tasks if t.name == "text-classification")
    assert task.plugin == "edgetune.plugins.text_classification"
    assert list(task.input_kinds) == ["text", "text_pair", "tokens"]
    assert list(info.execution_providers) == ["CPUExecutionProvider"]
    assert info.limits.max_batch_size == 8 and info.limits.max_text_bytes == 200
    assert info.onnxruntime_version


async def test_reflection_lists_every_service(channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def one():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    (reply,) = [r async for r in stub.ServerReflectionInfo(one())]
    names = {s.name for s in reply.list_services_response.service}
    assert names == {
        "edgetune.v1.FineTuning",
        "edgetune.v1.Inference",
        "edgetune.v1.Models",
        "edgetune.v1.Server",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "inference.GRPCInferenceService",
    }


async def test_graceful_stop_finishes_in_flight_calls_and_reports_not_serving(
    settings, plugins, monkeypatch
) -> None:
    settings = settings.replace(
        inline_max_inputs=0
    )  # the held call must block a pool thread, not the loop
    running = await start_server(settings, plugins)
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good")])
        await stub.Classify(request)
        runtime = (await running.registry.get("tiny")).runtime
        decode = runtime.decode
        entered, release = threading.Event(), threading.Event()

        def held_decode(*args):
            entered.set()
            release.wait(30)  # until the server has begun to stop
            return decode(*args)

        monkeypatch.setattr(runtime, "decode", held_decode)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        in_flight = asyncio.ensure_future(stub.Classify(request))
        assert await asyncio.to_thread(entered.wait, 30)  # the call is running in the model
        stopping = asyncio.create_task(running.stop(30))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()  # an open watch would hold the drain open until the grace ends
        assert not in_flight.done()
        release.set()
        reply = await in_flight  # finished despite the stop
        assert reply.results
        await stopping
        with pytest.raises(aio.AioRpcError):
            await stub.Classify(request, timeout=1)
