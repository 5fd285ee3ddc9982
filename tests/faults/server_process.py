"""`edgetune serve` in a child process for the fault tests: start it on a home, kill it
with SIGKILL, start it again; and what a test checks in the repository afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
from fakes import alive, wait_gone  # noqa: F401 (the fault tests import them from here)

from edgetune.client import free_port, wait_until_serving
from edgetune.store import ModelRepository
from edgetune.store.manifest import Manifest
from edgetune.store.repository import LATEST
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb


class ServerProcess:
    """One `edgetune serve` child on a fixed loopback port, restartable on the same home."""

    def __init__(self, home: Path, **env: str) -> None:
        self.home = home
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self.base_env = {
            **os.environ,
            "EDGETUNE_HOME": str(home),
            "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
            "EDGETUNE_TRAIN_THREADS": "1",
            "EDGETUNE_LOG_LEVEL": "WARNING",
            **env,
        }

    def start(self, **env: str) -> ServerProcess:
        """Start the server (extra env for this start only) and wait until it is healthy."""
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edgetune", "serve", "--port", str(self.port)],
            env={**self.base_env, **env},
        )
        wait_until_serving(self.address, timeout=90, process=self.process)
        return self

    def kill9(self) -> None:
        """SIGKILL the server: no shutdown code runs."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Kill the server if it still runs (test clean-up)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def channel(self) -> grpc.Channel:
        return grpc.insecure_channel(self.address)


def watch_until(channel: grpc.Channel, job_id: str, text: str) -> list[fpb.JobEvent]:
    """A job's events up to the first whose message contains text (AssertionError if the
    job ends first)."""
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    events = []
    for event in stub.WatchJob(fpb.WatchJobRequest(id=job_id), timeout=240):
        events.append(event)
        if text in event.message:
            return events
    raise AssertionError(f"job ended without {text!r}: {[e.message for e in events]}")


def staging_leftovers(home: Path) -> list[str]:
    """What is in the repository's staging area (folders and their lock files)."""
    staging = home / "models" / ".staging"
    return sorted(p.name for p in staging.iterdir()) if staging.is_dir() else []


def check_repository(home: Path, channel: grpc.Channel, name: str) -> Iterator[int]:
    """Assert every version of name verifies (the sha256 of every file) and serves, and
    that `latest` names a complete version; yields the version numbers."""
    repository = ModelRepository(home / "models")
    stub = inference_pb2_grpc.InferenceStub(channel)
    versions = repository.versions(name)
    for number in versions:
        folder = home / "models" / name / str(number)
        Manifest.read(folder).verify_files(folder)  # every file, not only the served ones
        reply = stub.Classify(
            ipb.ClassifyRequest(model=name, version=str(number), inputs=[ipb.Input(text="good")]),
            timeout=60,
        )
        assert reply.version == str(number)
    latest = repository.resolve(name, LATEST)
    assert latest.version in versions
    yield from versions
