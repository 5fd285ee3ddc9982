"""edgetune.v1.Models and per-model health, over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.exporters.onnx import import_model
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc, models_pb2_grpc
from edgetune.v1 import models_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def models(channel: aio.Channel) -> models_pb2_grpc.ModelsStub:
    return models_pb2_grpc.ModelsStub(channel)


async def health_of(channel: aio.Channel, service: str) -> int:
    reply = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service)
    )
    return reply.status


async def test_list_and_get(models) -> None:
    listed = await models.ListModels(pb.ListModelsRequest())
    assert [m.name for m in listed.models] == ["tiny"]
    (info,) = listed.models[0].versions
    assert (info.version, info.task, info.state) == (
        "1",
        "text-classification",
        pb.MODEL_STATE_LOADED,  # model_control "all": loaded at start-up
    )
    assert info.providers == ["CPUExecutionProvider"] and not info.state_reason
    assert [label.name for label in info.labels] == ["negative", "neutral", "positive"]
    assert list(info.aliases) == ["latest"]
    assert list(info.input_kinds) == ["text", "text_pair", "tokens"]
    assert info.format == "onnx-fp32" and info.size_bytes > 0
    got = await models.GetModel(pb.GetModelRequest(name="tiny", version="latest"))
    assert got.version == "1" and got.created == info.created


async def test_load_unload_while_serving_with_health(models, channel, server) -> None:
    overall = await health_of(channel, "")
    assert overall == SERVING
    assert await health_of(channel, "tiny") == SERVING  # loaded at start-up
    await models.UnloadModel(pb.UnloadModelRequest(name="tiny"))
    assert await health_of(channel, "tiny") == NOT_SERVING
    assert await health_of(channel, "tiny:1") == NOT_SERVING

    loaded = await models.LoadModel(pb.LoadModelRequest(name="tiny"))
    assert loaded.state == pb.MODEL_STATE_LOADED
    assert loaded.providers == ["CPUExecutionProvider"]
    assert await health_of(channel, "tiny") == SERVING
    assert await health_of(channel, "tiny:1") == SERVING

    # Classify continuously while the model is unloaded and loaded again.
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
    stop = asyncio.Event()
    answers = 0
    answered = asyncio.Event()  # set at each answer

    async def traffic() -> int:
        """One call at a time until stopped (bounded: 100 000 calls at most)."""
        nonlocal answers
        for _ in range(100_000):
            if stop.is_set():
                return answers
            await stub.Classify(request)
            answers += 1
            answered.set()
        raise AssertionError("traffic was never stopped")

    async def two_more_answers() -> None:
        """Until two more calls were answered: the second one started after this point."""
        target = answers + 2
        async with asyncio.timeout(30):
            while answers < target:
                answered.clear()
                next_answer = asyncio.ensure_future(answered.wait())
                await asyncio.wait({next_answer, worker}, return_when=asyncio.FIRST_COMPLETED)
                next_answer.cancel()
                if worker.done():
                    await worker  # a failed call raises here

    worker = asyncio.create_task(traffic())
    await two_more_answers()  # calls are going on
    unloaded = await models.UnloadModel(pb.UnloadModelRequest(name="tiny"))
    assert unloaded.version == "1"
    await two_more_answers()  # a call that came while it was unloaded: loaded on demand
    await models.LoadModel(pb.LoadModelRequest(name="tiny", version="1"))
    await two_more_answers()  # and after the explicit load
    stop.set()
    assert await worker >= 6  # every call succeeded (a failure would raise here)

    await models.UnloadModel(pb.UnloadModelRequest(name="tiny"))
    assert await health_of(channel, "tiny") == NOT_SERVING
    info = await models.GetModel(pb.GetModelRequest(name="tiny"))
    assert info.state == pb.MODEL_STATE_AVAILABLE and not info.providers


async def test_model_imported_while_serving_is_picked_up(
    models, channel, server, repository, tiny_bert, plugins
) -> None:
    await models.LoadModel(pb.LoadModelRequest(name="tiny"))
    task = plugins.task("text-classification")
    await asyncio.to_thread(import_model, repository, task, "tiny", tiny_bert, ["a", "b", "c"])
    # Before `load`, "latest" still routes to the loaded version 1; after it, to version 2.
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good")])
    assert (await stub.Classify(request)).version == "1"
    loaded = await models.LoadModel(pb.LoadModelRequest(name="tiny"))
    assert loaded.version == "2"
    reply = await stub.Classify(request)
    assert reply.version == "2"
    assert {s.label for s in reply.results[0].labels} == {"a", "b", "c"}
    # A new model name is served on its first request, without a load.
    await asyncio.to_thread(import_model, repository, task, "fresh", tiny_bert)
    fresh = await stub.Classify(ipb.ClassifyRequest(model="fresh", inputs=[ipb.Input(text="x")]))
    assert fresh.model == "fresh"


@pytest.mark.parametrize(
    ("call", "message_in", "code", "message"),
    [
        (
            "GetModel",
            pb.GetModelRequest(name=""),
            grpc.StatusCode.INVALID_ARGUMENT,
            "name is required",
        ),
        (
            "GetModel",
            pb.GetModelRequest(name="nope"),
            grpc.StatusCode.NOT_FOUND,
            "model 'nope' not found",
        ),
        (
            "LoadModel",
            pb.LoadModelRequest(name="tiny", version="3"),
            grpc.StatusCode.NOT_FOUND,
            "no version 3",
        ),
        (
            "UnloadModel",
            pb.UnloadModelRequest(name="tiny"),
            grpc.StatusCode.FAILED_PRECONDITION,
            "is not loaded",
        ),
    ],
)
async def test_model_errors(models, call, message_in, code, message) -> None:
    if call == "UnloadModel":  # loaded at start-up: unloading it once is fine, twice not
        await models.UnloadModel(pb.UnloadModelRequest(name="tiny"))
    with pytest.raises(aio.AioRpcError) as caught:
        await getattr(models, call)(message_in)
    assert caught.value.code() == code
    assert message in caught.value.details()


async def test_corrupt_model_is_refused_and_others_keep_serving(
    models, channel, repository, tiny_bert, plugins
) -> None:
    task = plugins.task("text-classification")
    broken = await asyncio.to_thread(import_model, repository, task, "broken", tiny_bert)
    with (broken.path / "model.onnx").open("r+b") as f:
        f.seek(100)
        f.write(b"corrupt")
    stub = inference_pb2_grpc.InferenceStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Classify(ipb.ClassifyRequest(model="broken", inputs=[ipb.Input(text="x")]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "model.onnx does not match its sha256" in caught.value.details()
    ok = await stub.Classify(ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="x")]))
    assert ok.results


async def test_a_load_outlives_the_call_that_gave_up_on_it(server, channel, monkeypatch) -> None:
    import threading

    from edgetune.serving.model import ServedModel

    original = ServedModel.load
    loading, release = threading.Event(), threading.Event()
    loads: list[object] = []

    def held(cls, *args, **kwargs):
        loads.append(args[0])
        loading.set()
        release.wait(30)  # until the call has given up on the load
        return original(*args, **kwargs)

    await server.registry.unload("tiny")  # loaded at start-up
    monkeypatch.setattr(ServedModel, "load", classmethod(held))
    registry = server.registry
    # Server-side signs: the call's handler cancelled while it waits for the load; the
    # load done (the registry tells its listeners).
    handler_cancelled, loaded = asyncio.Event(), asyncio.Event()
    get = registry.get

    async def watched_get(*args, **kwargs):
        try:
            return await get(*args, **kwargs)
        except asyncio.CancelledError:
            handler_cancelled.set()
            raise

    async def on_change(version, is_loaded: bool) -> None:
        if is_loaded:
            loaded.set()

    monkeypatch.setattr(registry, "get", watched_get)
    registry.listeners.append(on_change)
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
    call = stub.Classify(request)
    assert await asyncio.to_thread(loading.wait, 30), "the call never started a load"
    call.cancel()  # the caller gives up while the load is held
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(handler_cancelled.wait(), 30)
    release.set()
    try:
        await asyncio.wait_for(loaded.wait(), 30)
    except TimeoutError:
        raise AssertionError("the load was abandoned with the call that gave up") from None
    assert [key for key in registry.loaded] == [("tiny", 1)]
    assert len(loads) == 1
    registry.listeners.remove(on_change)
