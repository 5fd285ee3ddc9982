"""Small helpers for programs that talk to an edgetune server (CLI, demo, benchmarks)."""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.errors import Unavailable


def wait_until_serving(
    address: str, timeout: float = 60.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    """Poll grpc.health.v1 until the server at address answers SERVING.

    :param process: the server's process, if this program started it: its exit ends the
        wait at once.
    :raises Unavailable: the server did not become healthy in time, or its process exited.
    """
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if process is not None and process.poll() is not None:
                raise Unavailable(f"the server process exited with code {process.returncode}")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise Unavailable(f"no edgetune server became healthy on {address}")
            time.sleep(0.2)
