"""The model repository in S3, against moto's S3 server on loopback (tests/conftest.py):
publish order, the read-through cache and its checks, racing publishers, alias moves seen
by another replica, errors, the URL setting."""

from __future__ import annotations

import hashlib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from s3_helpers import objects, s3repo, stage

from edgetune.errors import (
    FailedPrecondition,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    Unavailable,
)
from edgetune.settings import Settings
from edgetune.store import Manifest, ModelRepository, open_repository
from edgetune.store.s3 import S3Repository
from edgetune.store.s3_client import s3_client


def test_publish_resolve_and_get_round_trip_through_the_bucket(bucket: str, tmp_path: Path) -> None:
    writer = s3repo(bucket, tmp_path / "writer")
    published = stage(writer, "m", b"weights")
    assert published.version == 1
    stored = objects(bucket)
    assert stored["models/m/1/model.onnx"] == b"weights"
    assert stored["models/m/1/trainable/model.safetensors"] == b"weights" * 3
    assert stored["models/m/aliases/latest"] == b"1\n"
    # Another replica, with a cache of its own, downloads and checks the version.
    reader = s3repo(bucket, tmp_path / "reader")
    assert reader.model_names() == ["m"]
    assert reader.versions("m") == [1]
    assert reader.aliases("m") == {"latest": 1}
    version = reader.resolve("m")
    assert version.path == tmp_path / "reader" / bucket / "models" / "m" / "1"
    for file in ("model.onnx", "tokenizer.json", "trainable/model.safetensors"):
        assert (version.path / file).read_bytes() == (published.path / file).read_bytes()
    assert version.manifest == published.manifest
    assert version.manifest.files["model.onnx"] == hashlib.sha256(b"weights").hexdigest()
    version.manifest.verify_files(version.path)
    assert reader.used_bytes() == sum(len(data) for data in stored.values())
    assert not any((reader.root / ".incoming").iterdir())


def test_a_listing_reads_manifests_without_downloading(bucket: str, tmp_path: Path) -> None:
    from edgetune.training.results import find_published

    with s3repo(bucket, tmp_path / "writer").staging() as folder:
        (folder / "model.onnx").write_bytes(b"weights")
        manifest = Manifest(task="t", labels=["a"], training={"job": "job-1"})
        s3repo(bucket, tmp_path / "writer").publish("m", folder, manifest)
    reader = s3repo(bucket, tmp_path / "reader")
    described = reader.describe("m", 1)
    assert described.manifest.training == {"job": "job-1"}
    assert described.model_file_bytes == len(b"weights")
    assert found_version(find_published(reader, "m", "job-1")) == 1
    assert not (reader.root / "m").exists()  # nothing downloaded
    with pytest.raises(NotFound, match="no version 2"):
        reader.describe("m", 2)
    assert reader.get("m", 1).path == described.path  # where get puts the files


def found_version(version: Any) -> int | None:
    return None if version is None else int(version.version)


def test_files_without_a_manifest_are_not_a_version(bucket: str, tmp_path: Path) -> None:
    client = s3_client()
    client.put_object(Bucket=bucket, Key="models/half/1/model.onnx", Body=b"x")
    repo = s3repo(bucket, tmp_path)
    assert repo.model_names() == []
    assert repo.versions("half") == []
    with pytest.raises(NotFound, match="model 'half' not found"):
        repo.resolve("half")
    stage(repo, "m")
    client.put_object(Bucket=bucket, Key="models/m/2/model.onnx", Body=b"uploading")
    assert repo.versions("m") == [1]
    assert repo.resolve("m").version == 1
    with pytest.raises(NotFound, match="no version 2"):
        repo.resolve("m", "2")
    with pytest.raises(NotFound, match="no version 2"):
        repo.set_alias("m", "production", 2)
    # Number 2 holds objects: the next publish takes 3, never the half-written number.
    assert stage(repo, "m").version == 3


def test_a_corrupted_object_fails_the_load_and_leaves_nothing_in_the_cache(
    bucket: str, tmp_path: Path
) -> None:
    stage(s3repo(bucket, tmp_path / "writer"), "m", b"weights")
    s3_client().put_object(Bucket=bucket, Key="models/m/1/model.onnx", Body=b"weightz")
    reader = s3repo(bucket, tmp_path / "reader")
    with pytest.raises(
        ModelLoadError, match=r"s3://.*/models/m/1/model\.onnx does not match its sha256"
    ):
        reader.resolve("m")
    assert not (reader.root / "m" / "1").exists()
    assert not any((reader.root / ".incoming").iterdir())
    # A bigger object is refused as soon as it passes the manifest's size.
    s3_client().put_object(Bucket=bucket, Key="models/m/1/model.onnx", Body=b"w" * 100)
    with pytest.raises(ModelLoadError, match="bigger than its size"):
        reader.get("m", 1)
    s3_client().delete_object(Bucket=bucket, Key="models/m/1/tokenizer.json")
    s3_client().put_object(Bucket=bucket, Key="models/m/1/model.onnx", Body=b"weights")
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json is missing"):
        reader.get("m", 1)
    assert not (reader.root / "m" / "1").exists()


def test_racing_publishers_get_different_numbers(bucket: str, tmp_path: Path) -> None:
    first, second = s3repo(bucket, tmp_path / "a"), s3repo(bucket, tmp_path / "b")
    # Both list the taken numbers before either claims one, so both pick number 1.
    listed = threading.Barrier(2, timeout=30)
    for repo in (first, second):
        numbers = repo._numbers

        def after_listing(name: str, manifest_only: bool, numbers: Any = numbers) -> list[int]:
            found: list[int] = numbers(name, manifest_only)
            if not manifest_only:
                listed.wait()
            return found

        repo._numbers = after_listing  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        futures = [
            pool.submit(stage, repo, "m", bytes([65 + i]) * 8)
            for i, repo in enumerate((first, second))
        ]
        versions = [future.result() for future in futures]
    assert sorted(v.version for v in versions) == [1, 2]
    reader = s3repo(bucket, tmp_path / "reader")
    for version in versions:  # each number holds its own publisher's files, intact
        mine = (version.path / "model.onnx").read_bytes()
        assert (reader.get("m", version.version).path / "model.onnx").read_bytes() == mine


def test_an_alias_move_is_seen_by_another_replica(bucket: str, tmp_path: Path) -> None:
    writer, replica = s3repo(bucket, tmp_path / "writer"), s3repo(bucket, tmp_path / "replica")
    stage(writer, "m", b"one")
    assert replica.resolve("m").version == 1
    stage(writer, "m", b"two", aliases=())  # published, not promoted
    assert replica.resolve("m").version == 1
    writer.set_alias("m", "latest", 2)
    assert replica.resolve("m").version == 2
    writer.set_alias("m", "production", 1)
    assert replica.resolve("m", "production").version == 1
    writer.set_alias("m", "production", 2)
    assert replica.resolve("m", "production").version == 2
    assert replica.aliases("m") == {"latest": 2, "production": 2}


def test_model_settings_live_beside_the_versions_in_the_bucket(bucket: str, tmp_path: Path) -> None:
    repo = s3repo(bucket, tmp_path)
    stage(repo, "m")
    assert repo.overrides("m").batch_max_size is None
    client = s3_client()
    client.put_object(
        Bucket=bucket, Key="models/m/model-settings.json", Body=b'{"batch_max_size": 4}'
    )
    assert repo.overrides("m").batch_max_size == 4
    client.put_object(
        Bucket=bucket, Key="models/m/model-settings.json", Body=b'{"batch_max_size": 0}'
    )
    with pytest.raises(ModelLoadError, match=r"m/model-settings\.json: batch_max_size"):
        repo.overrides("m")


def test_bucket_errors_are_edgetune_errors_naming_the_bucket(endpoint: str, tmp_path: Path) -> None:
    with pytest.raises(FailedPrecondition, match="bucket 'no-such-bucket' does not exist"):
        S3Repository("no-such-bucket", "", tmp_path).model_names()
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed}")
        with pytest.raises(Unavailable, match="cannot reach bucket 'edgetune-away'"):
            S3Repository("edgetune-away", "p", tmp_path).versions("m")
    with pytest.MonkeyPatch.context() as env:
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.delenv(name)
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        env.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        env.setenv("AWS_EC2_METADATA_DISABLED", "true")
        with pytest.raises(FailedPrecondition, match="no AWS credentials for bucket 'edgetune-x'"):
            S3Repository("edgetune-x", "", tmp_path).model_names()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://host/models", "unsupported scheme 'ftp'"),
        ("s3://Not_A_Bucket/models", "not a valid S3 bucket name"),
        ("s3://ab/models", "not a valid S3 bucket name"),
        ("s3://edgetune/../models", "no '.' or '..' parts"),
        ("s3://edgetune/a b", "the prefix may hold"),
        ("models/relative", "not an absolute folder"),
        ("file://elsewhere/models", "write file:///absolute/folder"),
    ],
)
def test_a_bad_repository_url_is_refused_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match="EDGETUNE_REPOSITORY_URL") as raised:
        Settings().replace(repository_url=url)
    assert message in raised.value.message
    with pytest.raises(InvalidArgument, match="EDGETUNE_REPOSITORY_URL or EDGETUNE_REPOSITORY_DIR"):
        Settings().replace(repository_url="s3://edgetune/models", repository_dir="/srv/models")


def test_the_url_picks_the_backend(tmp_path: Path, endpoint: str) -> None:
    local = open_repository(Settings(home=tmp_path, repository_url=f"file://{tmp_path}/shared"))
    assert isinstance(local, ModelRepository)
    assert local.root == tmp_path / "shared"
    assert open_repository(Settings(home=tmp_path)).root == tmp_path / "models"
    remote = open_repository(Settings(home=tmp_path, repository_url="s3://edgetune-x/a/b/"))
    assert isinstance(remote, S3Repository)
    cache = tmp_path / "cache" / "models"
    assert (remote.location, remote.root) == ("s3://edgetune-x/a/b", cache / "edgetune-x" / "a%2Fb")


def test_each_bucket_and_prefix_has_a_cache_of_its_own(bucket: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    stage(S3Repository(bucket, "staging", cache), "m", b"staging")
    stage(S3Repository(bucket, "", cache), "m", b"root")
    stage(S3Repository(bucket, "prod/eu", cache), "m", b"prod")
    # One cache folder, three repositories with a version 1 of "m": each gets its own.
    for prefix, content in (("staging", b"staging"), ("", b"root"), ("prod/eu", b"prod")):
        version = S3Repository(bucket, prefix, cache).resolve("m")
        assert (version.path / "model.onnx").read_bytes() == content


def test_a_manifest_in_the_bucket_cannot_write_outside_the_cache(
    bucket: str, tmp_path: Path
) -> None:
    body = b"evil"
    manifest = Manifest(
        task="t",
        labels=["a"],
        files={
            "model.onnx": hashlib.sha256(body).hexdigest(),
            "../../../escaped": hashlib.sha256(body).hexdigest(),
        },
    )
    client = s3_client()
    for key in ("models/m/1/model.onnx", "models/m/1/../../../escaped"):
        client.put_object(Bucket=bucket, Key=key, Body=body)
    client.put_object(
        Bucket=bucket, Key="models/m/1/manifest.json", Body=manifest.model_dump_json().encode()
    )
    reader = s3repo(bucket, tmp_path / "cache")
    with pytest.raises(ModelLoadError, match=r"'\.\./\.\./\.\./escaped' points outside"):
        reader.get("m", 1)
    assert not list(tmp_path.rglob("escaped"))
    assert not (reader.root / "m" / "1").exists()
