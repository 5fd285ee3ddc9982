"""The model repository in an S3 bucket, read through a local cache.

Objects under `s3://<bucket>/<prefix>/`, laid out as a repository folder is:

    <name>/<version>/.claim          the number taken, before any upload (see publish)
    <name>/<version>/<file>          the version's files (trainable/ included)
    <name>/<version>/manifest.json   uploaded last: the version exists once this does
    <name>/aliases/<alias>           one line, the version number
    <name>/model-settings.json       the model's serving overrides, as beside a folder's

Readers list versions by their manifests, so files uploaded without one (a publisher that
died, or one still uploading) are never seen; a PUT replaces an alias object whole, and S3
reads are strongly consistent, so a reader sees the old or the new alias, never half of one.
Versions are immutable: `get` downloads one into `<cache root>/<name>/<version>/` once (into a
temporary folder, every file checked against the manifest's sha256 and size while it
arrives, then renamed into place) and serves it from there after; aliases and the version
list are read from the bucket at every call, so `registry.follow` sees another replica's
publish without a restart.

boto3 because it is the AWS SDK itself: the standard credential chain (AWS_* variables,
profiles, instance and pod roles), AWS_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph,
moto in the tests), retries, multipart uploads of large files and the conditional write
(If-None-Match) that numbers versions; it is the `s3` extra, imported only for an s3:// URL.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import uuid
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgetune.errors import (
    AlreadyExists,
    InvalidArgument,
    ModelLoadError,
    NotFound,
    quoted,
)
from edgetune.store.manifest import MANIFEST_NAME, MODEL_FILE, Manifest
from edgetune.store.model_settings import MODEL_SETTINGS_NAME, ModelOverrides
from edgetune.store.repository import (
    _NAME,
    LATEST,
    ModelRepository,
    ModelVersion,
    check_name,
    pick_version,
)
from edgetune.store.s3_client import TAKEN, error_code, s3_client, s3_errors

_CLAIM = ".claim"
_ALIASES = "aliases"
_INCOMING = ".incoming"
_SMALL_BYTES = 16 * 1024 * 1024
"""Most bytes read of a manifest, an alias or a model-settings.json object."""
_STALE_INCOMING_S = 3600.0
"""A download folder untouched this long belongs to a process that died mid-download."""


class S3Repository:
    """Versions, manifests and aliases of every model under one bucket prefix, with the
    versions used kept in a local cache folder (which also holds the staging folders)."""

    def __init__(self, bucket: str, prefix: str, cache: Path, client: Any = None) -> None:
        """A repository under s3://bucket/prefix, caching into a folder of its own in
        cache: `<cache>/<bucket>/<prefix, its slashes as %2F, or % for none>/`, so
        pointing a home at another bucket or prefix never serves a version cached from
        the first ('%' is in no prefix or model name, so no two of these folders meet)."""
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.root = cache / bucket / (prefix.replace("/", "%2F") or "%")
        # The cache is laid out as a folder repository (and stages as one does), so
        # cached versions are read, and staging folders made and cleaned, by that code.
        self._cache = ModelRepository(self.root)
        self._client = client if client is not None else s3_client()

    @property
    def location(self) -> str:
        """s3://bucket/prefix, for messages."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    # -- reading --------------------------------------------------------------------------

    def model_names(self) -> list[str]:
        """Names of every model with at least one version (a manifest), sorted."""
        names = []
        with s3_errors(self.bucket, "listing the models"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, Delimiter="/"
            )
            for page in pages:
                for common in page.get("CommonPrefixes", []):
                    names.append(common["Prefix"][len(self.prefix) :].rstrip("/"))
        return sorted(n for n in names if _NAME.fullmatch(n) and ".." not in n and self.versions(n))

    def versions(self, name: str) -> list[int]:
        """Version numbers whose manifest exists, ascending; empty when there are none."""
        return self._numbers(check_name(name), manifest_only=True)

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for one model, each alias object read now."""
        found = {}
        for key, _ in self._list(f"{check_name(name)}/{_ALIASES}/"):
            alias = key.rpartition("/")[2]
            number = self._alias(name, alias)
            if number is not None:
                found[alias] = number
        return found

    def resolve(self, name: str, spec: str = "") -> ModelVersion:
        """The version named by spec (a number, an alias, "" for `latest`), in the cache.

        The version list and the alias are read from the bucket every time (another
        replica may have moved it); the version itself comes from the cache once there.
        """
        number = pick_version(name, spec, self.versions(name), lambda a: self._alias(name, a))
        return self.get(name, number)

    def get(self, name: str, version: int) -> ModelVersion:
        """A version by number: from the cache, else downloaded into it and checked.

        :raises NotFound: the bucket holds no manifest for it.
        :raises ModelLoadError: a file is missing, too big or differs from its sha256 (the
            message names it); nothing of the version is left in the cache.
        """
        if (self.root / check_name(name) / str(version)).is_dir():
            return self._cache.get(name, version)
        return self._download(name, version)

    def describe(self, name: str, version: int) -> ModelVersion:
        """A version with its manifest, its files not downloaded: what a listing needs
        (ListModels, a restarted job looking for its version). Its path is the cache
        folder its files are in once `get` has downloaded them.

        :raises NotFound: the bucket holds no manifest for it.
        """
        if (self.root / check_name(name) / str(version)).is_dir():
            return self._cache.get(name, version)
        where = f"{self.location}/{name}/{version}"
        return ModelVersion(
            name, version, self.root / name / str(version), self._manifest(name, version, where)
        )

    def overrides(self, name: str) -> ModelOverrides:
        """The overrides in the bucket's `<name>/model-settings.json`, read at every load."""
        where = f"{self.location}/{check_name(name)}/{MODEL_SETTINGS_NAME}"
        data = self._read(f"{name}/{MODEL_SETTINGS_NAME}")
        return ModelOverrides() if data is None else ModelOverrides.parse(data, where)

    def used_bytes(self) -> int:
        """Bytes of every object under the prefix (what models_quota_mb is checked against)."""
        return sum(size for _, size in self._list(""))

    # -- writing --------------------------------------------------------------------------

    def staging(self) -> AbstractContextManager[Path]:
        """A fresh local folder (in the cache) to assemble a version in; see
        `ModelRepository.staging`."""
        return self._cache.staging()

    def remove_stale_staging(self) -> None:
        """Delete the staging folders of dead processes, and downloads they left behind."""
        self._cache.remove_stale_staging()
        incoming = self.root / _INCOMING
        if incoming.is_dir():
            for folder in incoming.iterdir():
                if time.time() - folder.stat().st_mtime > _STALE_INCOMING_S:
                    shutil.rmtree(folder, ignore_errors=True)

    def publish(
        self, name: str, staged: Path, manifest: Manifest, aliases: tuple[str, ...] = (LATEST,)
    ) -> ModelVersion:
        """Upload a staged folder as the model's next version, then point aliases at it.

        In this order, so a reader never sees half a version: take the next number with a
        conditional write of its `.claim` object (If-None-Match: two publishers racing get
        different numbers, the loser takes the next), upload every file, upload the
        manifest (the commit marker), then write the aliases. The staged folder becomes the
        cache's copy of the version. A publisher that dies mid-way leaves a claimed number
        with no manifest: readers never see it and the number is not used again.
        """
        check_name(name)
        for alias in aliases:
            _check_alias(alias)
        manifest.record_files(staged)
        manifest.write(staged)
        number = self._claim(name)
        base = f"{name}/{number}/"
        with s3_errors(self.bucket, f"uploading {name} version {number}"):
            for file in manifest.files:
                self._client.upload_file(str(staged / file), self.bucket, self.prefix + base + file)
        if not self._put(base + MANIFEST_NAME, (staged / MANIFEST_NAME).read_bytes(), True):
            raise AlreadyExists(f"model {name!r} version {number} was published by another")
        cached = self.root / name / str(number)
        cached.parent.mkdir(parents=True, exist_ok=True)
        # The number was free in the bucket, so a cached folder of that number is not
        # this version (the bucket was emptied since): ours replaces it.
        shutil.rmtree(cached, ignore_errors=True)
        staged.rename(cached)
        for alias in aliases:
            self.set_alias(name, alias, number)
        return self._cache.get(name, number)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point alias at version: one PUT of the alias object, which replaces it whole."""
        _check_alias(alias)
        if self._read(f"{check_name(name)}/{version}/{MANIFEST_NAME}") is None:
            raise NotFound(f"model {name!r} has no version {version}")
        self._put(f"{name}/{_ALIASES}/{alias}", f"{version}\n".encode())

    # -- inside ---------------------------------------------------------------------------

    def _claim(self, name: str) -> int:
        # Every number with any object (a claim, files) counts as taken, published or not.
        number = max(self._numbers(name, manifest_only=False), default=0) + 1
        for _ in range(100):
            owner = f"{os.uname().nodename} {os.getpid()} {uuid.uuid4().hex}\n"
            if self._put(f"{name}/{number}/{_CLAIM}", owner.encode(), exclusive=True):
                return number
            number += 1  # another publisher took it
        raise AlreadyExists(f"model {name!r}: could not allocate a new version number")

    def _numbers(self, name: str, manifest_only: bool) -> list[int]:
        found = set()
        for key, _ in self._list(f"{name}/"):
            number, _, rest = key[len(name) + 1 :].partition("/")
            if not (number.isascii() and number.isdigit()) or number != str(int(number)):
                continue
            if rest and (rest == MANIFEST_NAME or not manifest_only):
                found.add(int(number))
        return sorted(found)

    def _alias(self, name: str, alias: str) -> int | None:
        data = self._read(f"{name}/{_ALIASES}/{alias}")
        text = data.decode(errors="replace").strip() if data is not None else ""
        return int(text) if text.isascii() and text.isdigit() and len(text) < 20 else None

    def _download(self, name: str, version: int) -> ModelVersion:
        where = f"{self.location}/{name}/{version}"
        manifest = self._manifest(name, version, where)
        if MODEL_FILE not in manifest.files:
            raise ModelLoadError(f"{where}: manifest lists no {MODEL_FILE}")
        incoming = self.root / _INCOMING
        incoming.mkdir(parents=True, exist_ok=True)
        folder = incoming / f"{os.getpid()}-{uuid.uuid4().hex}"
        folder.mkdir()
        try:
            for file, sha256 in manifest.files.items():
                target = folder / file
                # Checked before anything is written: a manifest naming ../x writes nowhere.
                if not target.resolve().is_relative_to(folder.resolve()):
                    raise ModelLoadError(f"{where}: manifest file {quoted(file)} points outside")
                target.parent.mkdir(parents=True, exist_ok=True)
                self._fetch(f"{name}/{version}/{file}", target, sha256, manifest.sizes.get(file))
            manifest.write(folder)
            cached = self.root / name / str(version)
            cached.parent.mkdir(parents=True, exist_ok=True)
            try:
                folder.rename(cached)
            except OSError:
                if not cached.is_dir():
                    raise
                # Another thread or process downloaded it first: the same immutable files.
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return self._cache.get(name, version)

    def _manifest(self, name: str, version: int, where: str) -> Manifest:
        raw = self._read(f"{name}/{version}/{MANIFEST_NAME}")
        if raw is None:
            raise NotFound(f"model {name!r} has no version {version}")
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise ModelLoadError(
                f"{where}/{MANIFEST_NAME}: field {field!r}: {first['msg']}"
            ) from None

    def _fetch(self, key: str, target: Path, sha256: str, size: int | None) -> None:
        """Download key to target, hashing as it arrives; refuse it once it passes size."""
        where = f"{self.location}/{key}"
        digest, written = hashlib.sha256(), 0
        with s3_errors(self.bucket, f"downloading {where}"):
            body = self._body(key)
            if body is None:
                raise ModelLoadError(f"{where} is missing")
            with body, target.open("wb") as out:
                for chunk in body.iter_chunks(1 << 20):
                    written += len(chunk)
                    if size is not None and written > size:
                        raise ModelLoadError(f"{where} is bigger than its size in the manifest")
                    digest.update(chunk)
                    out.write(chunk)
        if digest.hexdigest() != sha256:
            raise ModelLoadError(f"{where} does not match its sha256 in the manifest")

    def _list(self, under: str) -> list[tuple[str, int]]:
        """(key without the prefix, size) of every object whose key starts with under."""
        found = []
        with s3_errors(self.bucket, f"listing {self.location}/{under}"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + under
            )
            for page in pages:
                for item in page.get("Contents", []):
                    found.append((item["Key"][len(self.prefix) :], int(item["Size"])))
        return found

    def _read(self, key: str, limit: int = _SMALL_BYTES) -> bytes | None:
        """The bytes of a small object (a manifest, an alias, model-settings.json); None
        when it does not exist. Read at most limit bytes: a bucket is not trusted to keep
        them small."""
        with s3_errors(self.bucket, f"reading {self.location}/{key}"):
            body = self._body(key)
            if body is None:
                return None
            with body:
                data: bytes = body.read(limit + 1)
        if len(data) > limit:
            raise ModelLoadError(f"{self.location}/{key} is larger than {limit} bytes")
        return data

    def _body(self, key: str) -> Any:
        """The streaming body of an object, None when there is no such key (call it inside
        s3_errors)."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise

    def _put(self, key: str, data: bytes, exclusive: bool = False) -> bool:
        """Write an object; with exclusive, only if none exists (False when one does)."""
        condition = {"IfNoneMatch": "*"} if exclusive else {}
        with s3_errors(self.bucket, f"writing {self.location}/{key}"):
            try:
                self._client.put_object(
                    Bucket=self.bucket, Key=self.prefix + key, Body=data, **condition
                )
            except Exception as exc:
                if exclusive and error_code(exc) in TAKEN:
                    return False
                raise
        return True


def _check_alias(alias: str) -> None:
    check_name(alias, "alias")
    if alias.isdigit():
        raise InvalidArgument(f"alias {alias!r} is not valid: an alias cannot be a number")
