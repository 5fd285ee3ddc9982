"""A task from a third-party distribution is imported and served with no core change."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from fakes import SENTIMENT_PLUGIN, install_distribution
from grpc import aio

from edgetune.exporters.onnx import import_model
from edgetune.plugins.manager import build_plugins
from edgetune.server.app import start_server
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc, server_pb2, server_pb2_grpc


async def test_entry_point_task_is_listed_imported_and_served(
    site, settings, repository, tiny_bert
):
    install_distribution(
        site,
        "acme-tasks",
        "1.2.0",
        {"acme_sentiment": SENTIMENT_PLUGIN},
        {"sentiment": "acme_sentiment"},
    )
    plugins = build_plugins()
    task = plugins.task("fake-sentiment")
    version = await asyncio.to_thread(import_model, repository, task, "reviews", tiny_bert)
    assert version.manifest.task == "fake-sentiment"

    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            info = await server_pb2_grpc.ServerStub(channel).GetServerInfo(
                server_pb2.GetServerInfoRequest()
            )
            plugin = next(p for p in info.plugins if p.name == "sentiment")
            assert plugin.origin == server_pb2.PLUGIN_ORIGIN_ENTRY_POINT
            assert (plugin.distribution, plugin.distribution_version) == ("acme-tasks", "1.2.0")
            assert "fake-sentiment" in {t.name for t in info.tasks}
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
                pb.ClassifyRequest(model="reviews", inputs=[pb.Input(text="good fun")])
            )
            assert reply.results[0].labels[0].selected
    finally:
        await running.stop(0)


async def test_model_whose_task_plugin_is_gone_is_refused(
    server, channel, repository, tiny_bert, site
):
    install_distribution(
        site,
        "acme-tasks",
        "1.2.0",
        {"acme_sentiment": SENTIMENT_PLUGIN},
        {"sentiment": "acme_sentiment"},
    )
    task = build_plugins().task("fake-sentiment")
    await asyncio.to_thread(import_model, repository, task, "orphan", tiny_bert)
    # `server` was built with the built-in plugins only.
    stub = inference_pb2_grpc.InferenceStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Classify(pb.ClassifyRequest(model="orphan", inputs=[pb.Input(text="x")]))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details() == (
        "model 'orphan' version 1 cannot be served: task 'fake-sentiment' is not registered "
        "(known tasks: image-classification, multi-label-classification, "
        "sentence-classification, text-classification, token-classification)"
    )
