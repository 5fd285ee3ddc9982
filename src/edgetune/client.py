"""Small helpers for programs that talk to an edgetune server (CLI, demo, benchmarks)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.errors import Unavailable


def open_channel(
    address: str,
    *,
    ca_file: Path | None = None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    token: str = "",
) -> grpc.Channel:
    """A blocking channel to address: TLS when ca_file is given (mutual TLS with cert_file
    and key_file), and `authorization: Bearer <token>` on every call when token is given."""
    if ca_file is not None:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=ca_file.read_bytes(),
            private_key=key_file.read_bytes() if key_file else None,
            certificate_chain=cert_file.read_bytes() if cert_file else None,
        )
        channel = grpc.secure_channel(address, credentials)
    else:
        channel = grpc.insecure_channel(address)
    if token:
        channel = grpc.intercept_channel(channel, BearerToken(token))
    return channel


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: bool | None
    compression: Any


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call of a channel."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> _CallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            details.wait_for_ready,
            details.compression,
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)


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


def free_port() -> int:
    """A TCP port on loopback that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def background_server(
    home: Path, timeout: float = 120.0, env: dict[str, str] | None = None
) -> Iterator[str]:
    """`edgetune serve` for home on a free loopback port, in a child process (entry-point
    plugins off, warnings only, `env` on top of this process's variables). Yields its
    address once healthy (ready); SIGTERM on exit."""
    port = free_port()
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(home),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        **(env or {}),
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "edgetune", "serve", "--port", str(port), "--log-level", "WARNING"],
        env=env,
    )
    try:
        address = f"127.0.0.1:{port}"
        wait_until_serving(address, timeout=timeout, process=server)
        yield address
    finally:
        server.terminate()
        server.wait()
