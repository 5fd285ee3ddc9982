"""Fixtures of the S3 repository tests: moto's S3 server on loopback and a bucket each."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from edgetune.store.s3_client import s3_client


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
