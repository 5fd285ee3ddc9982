"""Readiness that means ready: model_control, ServerReady, ModelReady, health and
ModelInfo.state agree, through start-up, a failed load, load, unload and a hot swap."""

from __future__ import annotations

import asyncio
import threading

import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.exporters.onnx import import_model
from edgetune.kserve import grpc_predict_v2_pb2 as v2pb
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.server.app import start_server
from edgetune.serving.model import ServedModel
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc, models_pb2_grpc, server_pb2_grpc
from edgetune.v1 import models_pb2 as mpb
from edgetune.v1 import server_pb2 as spb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Views:
    """Every way a client can ask whether a model is ready."""

    def __init__(self, channel: aio.Channel) -> None:
        self.v2 = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)
        self.server = server_pb2_grpc.ServerStub(channel)
        self.inference = inference_pb2_grpc.InferenceStub(channel)

    async def server_ready(self) -> tuple[bool, bool, bool]:
        """(v2 ServerReady, health "" SERVING, GetServerInfo.ready)."""
        v2 = (await self.v2.ServerReady(v2pb.ServerReadyRequest())).ready
        overall = await self.health.Check(health_pb2.HealthCheckRequest(service=""))
        info = await self.server.GetServerInfo(spb.GetServerInfoRequest())
        return v2, overall.status == SERVING, info.ready

    async def model_ready(self, name: str) -> tuple[bool, bool, bool]:
        """(v2 ModelReady, health "<name>" SERVING, ModelInfo.state of latest LOADED)."""
        v2 = (await self.v2.ModelReady(v2pb.ModelReadyRequest(name=name))).ready
        try:
            status = await self.health.Check(health_pb2.HealthCheckRequest(service=name))
            serving = status.status == SERVING
        except aio.AioRpcError:  # NOT_FOUND: never loaded in this process
            serving = False
        info = await self.models.GetModel(mpb.GetModelRequest(name=name))
        return v2, serving, info.state == mpb.MODEL_STATE_LOADED


@pytest.fixture
def gated_loads(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Model loads wait until the returned event is set."""
    gate = threading.Event()
    original = ServedModel.load

    def load(cls, *args, **kwargs):
        assert gate.wait(30), "the test never opened the gate"
        return original(*args, **kwargs)

    monkeypatch.setattr(ServedModel, "load", classmethod(load))
    return gate


async def test_not_ready_until_start_up_loading_has_finished(
    settings, plugins, gated_loads
) -> None:
    running = await start_server(settings, plugins, wait_ready=False)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            views = Views(channel)
            assert await views.server_ready() == (False, False, False)
            assert await views.model_ready("tiny") == (False, False, False)
            info = await views.models.GetModel(mpb.GetModelRequest(name="tiny"))
            assert info.state == mpb.MODEL_STATE_LOADING
            live = await views.v2.ServerLive(v2pb.ServerLiveRequest())
            assert live.live  # alive while loading: liveness probes must not restart it
            gated_loads.set()
            await running.wait_ready()
            assert await views.server_ready() == (True, True, True)
            assert await views.model_ready("tiny") == (True, True, True)
    finally:
        gated_loads.set()
        await running.stop(0)


async def test_a_model_that_fails_to_load_is_not_ready_and_says_why(
    settings, plugins, repository, tiny_bert
) -> None:
    task = plugins.task("text-classification")
    broken = await asyncio.to_thread(import_model, repository, task, "broken", tiny_bert)
    with (broken.path / "model.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"corrupt")
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            views = Views(channel)
            assert await views.server_ready() == (True, True, True)  # the others serve
            assert await views.model_ready("tiny") == (True, True, True)
            assert await views.model_ready("broken") == (False, False, False)
            info = await views.models.GetModel(mpb.GetModelRequest(name="broken"))
            assert info.state == mpb.MODEL_STATE_FAILED
            assert "model.onnx does not match its sha256" in info.state_reason
            # Repaired (a new version published), it becomes ready like any other load.
            fixed = await asyncio.to_thread(import_model, repository, task, "broken", tiny_bert)
            await views.models.LoadModel(mpb.LoadModelRequest(name="broken"))
            assert fixed.version == 2
            assert await views.model_ready("broken") == (True, True, True)
    finally:
        await running.stop(0)


async def test_lazy_model_control_loads_on_the_first_request(settings, plugins) -> None:
    settings = settings.replace(model_control="lazy")
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            views = Views(channel)
            assert await views.server_ready() == (True, True, True)
            assert await views.model_ready("tiny") == (False, False, False)
            info = await views.models.GetModel(mpb.GetModelRequest(name="tiny"))
            assert info.state == mpb.MODEL_STATE_AVAILABLE
            request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
            assert (await views.inference.Classify(request)).results
            assert await views.model_ready("tiny") == (True, True, True)
    finally:
        await running.stop(0)


async def test_every_view_agrees_through_unload_load_and_a_hot_swap(
    server, channel, repository, tiny_bert, plugins
) -> None:
    views = Views(channel)
    assert await views.model_ready("tiny") == (True, True, True)
    await views.models.UnloadModel(mpb.UnloadModelRequest(name="tiny"))
    assert await views.model_ready("tiny") == (False, False, False)
    await views.models.LoadModel(mpb.LoadModelRequest(name="tiny"))
    assert await views.model_ready("tiny") == (True, True, True)

    # A second version imported while serving: requests stay on the loaded version 1
    # until a load or promotion, and every view says so.
    task = plugins.task("text-classification")
    second = await asyncio.to_thread(import_model, repository, task, "tiny", tiny_bert)
    assert await views.model_ready("tiny") == (True, True, True)
    assert (await views.models.GetModel(mpb.GetModelRequest(name="tiny"))).version == "1"
    # Hot swap: SetAlias loads and warms 2, then moves latest; readiness never drops.
    swapped = await views.models.SetAlias(
        mpb.SetAliasRequest(name="tiny", alias="latest", version=str(second.version))
    )
    assert swapped.state == mpb.MODEL_STATE_LOADED
    assert await views.model_ready("tiny") == (True, True, True)
    health = await views.health.Check(health_pb2.HealthCheckRequest(service="tiny:1"))
    assert health.status == NOT_SERVING  # the replaced version was unloaded
    old = await views.models.GetModel(mpb.GetModelRequest(name="tiny", version="1"))
    assert old.state == mpb.MODEL_STATE_AVAILABLE
