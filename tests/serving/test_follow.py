"""Replicas over one shared repository: a server with repository_poll_s follows a version
another process published, with no failed request; one without it keeps its route."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from fakes import publish_copy
from grpc import aio

from edgetune.plugins.manager import Plugins
from edgetune.server.app import start_server
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

REQUEST = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])


async def test_a_replica_follows_a_version_published_elsewhere(
    settings: Settings, plugins: Plugins, repository: ModelRepository, tmp_path: Path
) -> None:
    shared = repository.root
    # Two replicas, a home each, one repository; only "follower" re-reads it.
    still = await start_server(
        settings.replace(home=tmp_path / "still", repository_dir=shared), plugins
    )
    follower = await start_server(
        settings.replace(home=tmp_path / "follower", repository_dir=shared, repository_poll_s=0.1),
        plugins,
    )
    try:
        async with (
            aio.insecure_channel(f"127.0.0.1:{still.port}") as still_channel,
            aio.insecure_channel(f"127.0.0.1:{follower.port}") as follower_channel,
        ):
            on_still = inference_pb2_grpc.InferenceStub(still_channel)
            on_follower = inference_pb2_grpc.InferenceStub(follower_channel)
            assert (await on_follower.Classify(REQUEST)).version == "1"
            assert (await on_still.Classify(REQUEST)).version == "1"
            # What a job's publish does: a new version and `latest` moved, on disk only.
            publish_copy(repository, repository.resolve("tiny"), "tiny")
            versions = []
            deadline = time.monotonic() + 60
            # Steady traffic (bounded: 60 s, 5,000 calls) until the follower answers with
            # version 2; a single failed call fails the test.
            while time.monotonic() < deadline and len(versions) < 5000:
                versions.append((await on_follower.Classify(REQUEST, timeout=10)).version)
                if versions[-1] == "2":
                    break
            assert versions[-1] == "2", versions[-5:]
            assert set(versions) == {"1", "2"}
            after = await asyncio.gather(*(on_follower.Classify(REQUEST) for _ in range(20)))
            assert {reply.version for reply in after} == {"2"}
            assert set(follower.registry.loaded) == {("tiny", 2)}  # version 1 was unloaded
            # Without repository_poll_s the other replica keeps the route it had.
            assert (await on_still.Classify(REQUEST)).version == "1"
    finally:
        await follower.stop(0)
        await still.stop(0)
