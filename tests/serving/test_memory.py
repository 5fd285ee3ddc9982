"""Memory per loaded model, least-recently-used eviction under a budget, pinned models."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import grpc
import pytest
from fakes import publish_copy
from grpc import aio

from edgetune.errors import NotFound
from edgetune.plugins.manager import Plugins
from edgetune.server.app import RunningServer, start_server
from edgetune.serving import model as model_module
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc, models_pb2_grpc, server_pb2_grpc
from edgetune.v1 import models_pb2 as mpb
from edgetune.v1 import server_pb2 as spb

MIB = 2**20


@pytest.fixture
def copies(repository: ModelRepository) -> int:
    """Models a, b and c: copies of the tiny model. Returns the size of one model.onnx."""
    tiny = repository.resolve("tiny")
    for name in "abc":
        publish_copy(repository, tiny, name)
    return tiny.model_file_bytes


@pytest.fixture
def counted_by_file_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loads add no resident memory, so each model counts exactly its model.onnx size:
    the budget arithmetic below is exact instead of depending on the allocator."""
    monkeypatch.setattr(model_module, "resident_bytes", lambda: 0)


class Stubs:
    def __init__(self, channel: aio.Channel) -> None:
        self.inference = inference_pb2_grpc.InferenceStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)
        self.server = server_pb2_grpc.ServerStub(channel)

    async def classify(self, name: str) -> ipb.ClassifyResponse:
        request = ipb.ClassifyRequest(model=name, inputs=[ipb.Input(text="good fun")])
        return await self.inference.Classify(request)

    async def loaded(self) -> list[str]:
        listed = await self.models.ListModels(mpb.ListModelsRequest())
        return [
            m.name for m in listed.models for v in m.versions if v.state == mpb.MODEL_STATE_LOADED
        ]


@asynccontextmanager
async def serving(settings: Settings, plugins: Plugins) -> AsyncIterator[Stubs]:
    running: RunningServer = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Stubs(channel)
    finally:
        await running.stop(0)


async def test_a_loaded_model_reports_the_memory_it_takes(settings, plugins) -> None:
    settings = settings.replace(model_control="lazy")
    async with serving(settings, plugins) as stubs:
        before = await stubs.models.GetModel(mpb.GetModelRequest(name="tiny"))
        assert before.memory_bytes == 0
        await stubs.classify("tiny")
        info = await stubs.models.GetModel(mpb.GetModelRequest(name="tiny"))
        assert info.memory_bytes >= info.size_bytes > 0
        server = await stubs.server.GetServerInfo(spb.GetServerInfoRequest())
        assert server.memory.models_bytes == info.memory_bytes
        assert server.memory.resident_bytes > server.memory.models_bytes
        assert server.memory.budget_bytes == 0
        await stubs.models.UnloadModel(mpb.UnloadModelRequest(name="tiny"))
        after = await stubs.server.GetServerInfo(spb.GetServerInfoRequest())
        assert after.memory.models_bytes == 0


async def test_the_least_recently_used_model_is_evicted_to_fit_the_budget(
    settings, plugins, copies, counted_by_file_size
) -> None:
    settings = settings.replace(memory_budget_mb=2.5 * copies / MIB)  # room for two models
    async with serving(settings, plugins) as stubs:
        await stubs.classify("a")
        await stubs.classify("b")
        await stubs.classify("a")  # b is now the least recently used
        await stubs.classify("c")
        assert await stubs.loaded() == ["a", "c"]
        server = await stubs.server.GetServerInfo(spb.GetServerInfoRequest())
        assert server.memory.models_bytes == 2 * copies
        assert server.memory.budget_bytes == int(2.5 * copies)

        # An evicted model loads again on its next request, evicting the next in line.
        reply = await stubs.classify("b")
        assert reply.model == "b" and reply.results[0].labels
        assert await stubs.loaded() == ["b", "c"]


async def test_start_up_loads_the_newest_models_that_fit_without_evicting(
    settings, plugins, copies, counted_by_file_size, caplog
) -> None:
    settings = settings.replace(
        memory_budget_mb=2.5 * copies / MIB
    )  # room for two of tiny, a, b, c
    async with serving(settings, plugins) as stubs:
        assert await stubs.loaded() == ["b", "c"]  # published last
        info = await stubs.server.GetServerInfo(spb.GetServerInfoRequest())
        assert info.ready and info.model_control == "all"
        # What did not fit loads on its first request, evicting as usual.
        assert (await stubs.classify("tiny")).model == "tiny"
    assert "not loaded at start-up: model 'a' version 1 needs" in caplog.text


async def test_pinned_models_load_at_start_and_are_never_evicted(
    settings, plugins, copies, counted_by_file_size
) -> None:
    settings = settings.replace(pinned_models=["a"])
    settings = settings.replace(model_control="pinned")
    settings = settings.replace(
        memory_budget_mb=1.5 * copies / MIB
    )  # room for the pinned model only
    async with serving(settings, plugins) as stubs:
        assert await stubs.loaded() == ["a"]  # before any request
        info = await stubs.models.GetModel(mpb.GetModelRequest(name="a"))
        assert info.pinned and info.memory_bytes == copies
        with pytest.raises(aio.AioRpcError) as refused:
            await stubs.classify("b")
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "model 'b'" in refused.value.details()
        assert "memory_budget_mb" in refused.value.details()
        assert await stubs.loaded() == ["a"]

    settings = settings.replace(memory_budget_mb=2.5 * copies / MIB)
    async with serving(settings, plugins) as stubs:
        await stubs.classify("b")
        await stubs.classify("c")  # b goes; pinned a, though used less recently, stays
        assert await stubs.loaded() == ["a", "c"]


async def test_a_pinned_model_that_does_not_exist_stops_the_start(settings, plugins) -> None:
    settings = settings.replace(pinned_models=["nope"])
    with pytest.raises(NotFound, match="nope"):
        await start_server(settings, plugins)


async def test_a_reloaded_version_is_charged_what_its_first_load_measured(
    settings, plugins, copies, monkeypatch
) -> None:
    # Resident memory before and after each load: "a" grows it by 3 model sizes, then (on
    # its reload, reusing memory the unload freed, as the allocator does) by nothing; "b"
    # by one size.
    readings = [0, 3 * copies, 0, 0, 0, copies]
    monkeypatch.setattr(model_module, "resident_bytes", lambda: readings.pop(0))
    settings = settings.replace(
        memory_budget_mb=3.5 * copies / MIB
    )  # room for "a" as first measured, only
    settings = settings.replace(model_control="lazy")  # the readings above follow request order
    async with serving(settings, plugins) as stubs:
        await stubs.classify("a")  # measured 3 sizes
        models = stubs.models
        first = (await models.GetModel(mpb.GetModelRequest(name="a"))).memory_bytes
        assert first == 3 * copies
        await models.UnloadModel(mpb.UnloadModelRequest(name="a"))
        await stubs.classify("a")  # measured 0 this time: still charged 3 sizes
        again = (await models.GetModel(mpb.GetModelRequest(name="a"))).memory_bytes
        assert again == first
        await stubs.classify("b")  # 1 size: a (3) + b (1) would pass 3.5, so a goes
        assert await stubs.loaded() == ["b"]
