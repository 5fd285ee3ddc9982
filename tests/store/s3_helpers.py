"""Helpers of the S3 repository tests (tests/store/test_s3*.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgetune.store import Manifest
from edgetune.store.s3 import S3Repository
from edgetune.store.s3_client import s3_client


def s3repo(bucket: str, cache: Path) -> S3Repository:
    """The repository under s3://bucket/models, caching in cache."""
    return S3Repository(bucket, "models", cache)


def stage(repo: Any, name: str, content: bytes = b"onnx", **kwargs: Any) -> Any:
    """Publish a version of three files (one under trainable/) built from content."""
    with repo.staging() as folder:
        (folder / "model.onnx").write_bytes(content)
        (folder / "tokenizer.json").write_text('{"v": 1}')
        (folder / "trainable").mkdir()
        (folder / "trainable" / "model.safetensors").write_bytes(content * 3)
        return repo.publish(name, folder, Manifest(task="t", labels=["a", "b"]), **kwargs)


def objects(bucket: str) -> dict[str, bytes]:
    """Every object in the bucket, by key."""
    client = s3_client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    return {key: client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys}
