"""Shared fixtures: a tiny random-init BERT built from a config (no downloads), a model
repository holding it, an in-process gRPC server on port 0, and moto's S3 server on
loopback with a bucket each."""

from __future__ import annotations

import json
import os
import shutil
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from grpc import aio

from edgetune import conformance
from edgetune.plugins.manager import Plugins, build_plugins
from edgetune.server.app import RunningServer, start_server
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.store.s3_client import s3_client

LABELS = ["negative", "neutral", "positive"]
WORDS = [
    "the",
    "movie",
    "was",
    "good",
    "bad",
    "great",
    "terrible",
    "film",
    "plot",
    "acting",
    "fun",
    "boring",
    "love",
    "hate",
    "is",
    "not",
    "very",
    "and",
    "it",
    "i",
    "this",
    "a",
    "of",
    "to",
]


def build_tiny_bert(folder: Path, labels: list[str] | None = None, seed: int = 0) -> Path:
    """A tiny BERT sequence classifier over WORDS (the conformance kit's builder)."""
    return conformance.build_tiny_bert(folder, labels or LABELS, WORDS, seed=seed)


@pytest.fixture(scope="session", autouse=True)
def base_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fine-tune requests may name base models anywhere under pytest's temporary folder
    (where the tiny models are built); servers started in or from this process inherit it."""
    previous = os.environ.get("EDGETUNE_BASE_DIRS")
    os.environ["EDGETUNE_BASE_DIRS"] = json.dumps([str(tmp_path_factory.getbasetemp())])
    yield
    if previous is None:
        del os.environ["EDGETUNE_BASE_DIRS"]
    else:
        os.environ["EDGETUNE_BASE_DIRS"] = previous


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local transformers folder with a tiny BERT classifier (labels in its config)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local transformers folder with a tiny random-init ViT image classifier (a, b)."""
    return conformance.build_tiny_vit(tmp_path_factory.mktemp("tiny-vit"), ["a", "b"])


@pytest.fixture(scope="session")
def plugins() -> Plugins:
    """The built-in plugins only (entry points off, so the host machine cannot interfere)."""
    return build_plugins(autoload=False)


@pytest.fixture(scope="session")
def seeded_models(
    tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, plugins: Plugins
) -> Path:
    """A repository with the tiny BERT imported once as model "tiny" version 1."""
    from edgetune.exporters.onnx import import_model

    root = tmp_path_factory.mktemp("seeded") / "models"
    import_model(ModelRepository(root), plugins.task("text-classification"), "tiny", tiny_bert)
    return root


@pytest.fixture
def home(tmp_path: Path, seeded_models: Path) -> Path:
    """A fresh edgetune home per test, holding a copy of the seeded repository."""
    shutil.copytree(seeded_models, tmp_path / "home" / "models")
    return tmp_path / "home"


@pytest.fixture
def repository(home: Path) -> ModelRepository:
    """The repository of this test's home."""
    return ModelRepository(home / "models")


@pytest.fixture
def settings(home: Path, request: pytest.FixtureRequest) -> Settings:
    """Settings for an in-process server on a free loopback port; a test marked
    `@pytest.mark.settings(name=value, ...)` gets those changes, before any fixture (the
    server, the job manager) is built from them (settings are frozen)."""
    settings = Settings(
        home=home,
        host="127.0.0.1",
        port=0,
        max_batch_size=8,
        max_text_bytes=200,
        disable_plugin_autoload=True,
        train_threads=1,
    )
    marker = request.node.get_closest_marker("settings")
    return settings.replace(**marker.kwargs) if marker is not None else settings


@pytest.fixture
async def server(settings: Settings, plugins: Plugins) -> AsyncIterator[RunningServer]:
    """A started in-process server; stopped after the test."""
    running = await start_server(settings, plugins)
    yield running
    await running.stop(0)


@pytest.fixture
async def channel(server: RunningServer) -> AsyncIterator[aio.Channel]:
    """An asyncio channel to the in-process server."""
    async with aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def sync_channel(server: RunningServer) -> Iterator[grpc.Channel]:
    """A blocking channel, for code paths that use the sync API (CLI)."""
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site-packages-like folder on sys.path; modules imported from it are forgotten after."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    before = set(sys.modules)
    yield folder
    for name in set(sys.modules) - before:
        if name.startswith("acme"):
            del sys.modules[name]


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the AWS_* variables boto3 reads
    pointing at it (in this process and the servers it starts). moto is in the dev extra:
    imported, not skipped, so an install without it fails here."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", url)
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", "us-east-1")
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
            env.delenv(name, raising=False)
        yield url
    server.stop()


@pytest.fixture
def bucket(endpoint: str) -> str:
    """A fresh, empty bucket for one test."""
    name = f"edgetune-{uuid.uuid4().hex[:12]}"
    s3_client().create_bucket(Bucket=name)
    return name
