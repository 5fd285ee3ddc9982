"""The model repository: `<root>/<name>/<version>/` folders, immutable once published.

A version is assembled in a staging folder on the same file system and renamed into place,
so a reader sees either no version or a complete one. Aliases (`latest`, `production`) are
one-line files under `<root>/<name>/aliases/`, replaced atomically with os.replace.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgetune.errors import AlreadyExists, InvalidArgument, NotFound, quoted
from edgetune.settings import parse_repository_url
from edgetune.store.manifest import MODEL_FILE, Manifest
from edgetune.store.model_settings import ModelOverrides

if TYPE_CHECKING:
    from edgetune.settings import Settings

LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_STAGING = ".staging"
_ALIASES = "aliases"
_LOCK = ".lock"


def check_name(name: str, what: str = "model name") -> str:
    """Return name if it is a safe model or alias name, else raise InvalidArgument."""
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidArgument(
            f"{what} {quoted(name)} is not valid: use letters, digits, '.', '_' and '-', "
            "starting with a letter or digit, at most 128 characters"
        )
    return name


@dataclass(frozen=True, slots=True)
class ModelVersion:
    """One published version of a model."""

    name: str
    version: int
    path: Path
    manifest: Manifest

    @property
    def key(self) -> tuple[str, int]:
        """(name, version): how a loaded version is looked up."""
        return self.name, self.version

    @property
    def model_file_bytes(self) -> int:
        """Size of model.onnx in bytes (0 when it is missing)."""
        if MODEL_FILE in self.manifest.sizes:
            return self.manifest.sizes[MODEL_FILE]
        model_file = self.path / MODEL_FILE
        return model_file.stat().st_size if model_file.exists() else 0


def pick_version(
    name: str, spec: str, versions: list[int], alias: Callable[[str], int | None]
) -> int:
    """The number spec names among a model's versions: a number, an alias (alias(spec) is
    its version, None when there is no such alias), or "" for `latest` (the alias, else the
    highest version). Every repository resolves through this, so the rules are one.

    :raises NotFound: naming the model, version or alias that does not exist.
    :raises InvalidArgument: spec is not a name or is a number spelt otherwise.
    """
    if not versions:
        raise NotFound(f"model {name!r} not found")
    spec = spec or LATEST
    # First: ASCII and at most 128 characters, so a spec str.isdigit() takes ("²", or
    # thousands of digits) is refused here rather than by int(); no spaces.
    check_name(spec, "version or alias")
    if spec.isdigit():
        number = int(spec)
        if spec != str(number):  # one spelling per version: "1", not "01" or "001"
            raise InvalidArgument(
                f"version {quoted(spec)} is not a version number as written by the "
                f"server: write {number}"
            )
        if number not in versions:
            raise NotFound(f"model {name!r} has no version {spec}")
        return number
    found = alias(spec)
    if found is not None:
        return found
    if spec == LATEST:
        return versions[-1]
    raise NotFound(f"model {name!r} has no alias {spec!r}")


class Repository(Protocol):
    """What the server, the jobs and the CLI call on a model repository: `ModelRepository`
    (a folder) and `S3Repository` (a bucket, in store/s3.py) both provide it."""

    root: Path
    """A local folder of the repository: the repository itself, or a bucket's cache."""

    @property
    def location(self) -> str:
        """Where the repository is, for messages (a folder, or s3://bucket/prefix)."""
        ...

    def model_names(self) -> list[str]:
        """Names of every model with at least one version, sorted."""
        ...

    def versions(self, name: str) -> list[int]:
        """Published version numbers of a model, ascending."""
        ...

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for one model."""
        ...

    def resolve(self, name: str, spec: str = "") -> ModelVersion:
        """The version named by spec: a number, an alias, or "" for `latest`."""
        ...

    def get(self, name: str, version: int) -> ModelVersion:
        """A version by number, its files in a local folder."""
        ...

    def describe(self, name: str, version: int) -> ModelVersion:
        """A version with its manifest, its files maybe not local yet (for listings)."""
        ...

    def overrides(self, name: str) -> ModelOverrides:
        """The model's model-settings.json overrides."""
        ...

    def staging(self) -> AbstractContextManager[Path]:
        """A fresh local folder to assemble a version in."""
        ...

    def remove_stale_staging(self) -> None:
        """Delete staging folders of processes that died."""
        ...

    def publish(
        self, name: str, staged: Path, manifest: Manifest, aliases: tuple[str, ...] = (LATEST,)
    ) -> ModelVersion:
        """Publish a staged folder as the model's next version."""
        ...

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point alias at version."""
        ...

    def used_bytes(self) -> int:
        """Bytes the repository holds (what models_quota_mb is checked against)."""
        ...


def open_repository(settings: Settings) -> Repository:
    """The model repository repository_url names: a folder (the default) or, for
    `s3://bucket/prefix`, an `S3Repository` with its cache in `settings.models_cache_dir`.

    :raises FailedPrecondition: an s3:// URL without boto3 installed (the `s3` extra).
    """
    scheme, bucket, prefix = parse_repository_url(settings.runtime.repository_url)
    if scheme == "s3":
        from edgetune.store.s3 import S3Repository  # boto3 only when a bucket is used

        return S3Repository(bucket, prefix, settings.models_cache_dir)
    return ModelRepository(settings.models_dir)


class ModelRepository:
    """Versions, manifests and aliases of every model under one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        """The repository's folder, for messages."""
        return str(self.root)

    def used_bytes(self) -> int:
        """Bytes of the regular files under the folder (staging included: it is disk the
        repository takes)."""
        if not self.root.is_dir():
            return 0
        return sum(
            p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink()
        )

    def model_names(self) -> list[str]:
        """Names of every model with at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and _NAME.fullmatch(p.name) and self.versions(p.name)
        )

    def versions(self, name: str) -> list[int]:
        """Published version numbers of a model, ascending; empty when it has none."""
        folder = self.root / check_name(name)
        if not folder.is_dir():
            return []
        return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())

    def aliases(self, name: str) -> dict[str, int]:
        """Alias -> version for one model."""
        folder = self.root / check_name(name) / _ALIASES
        if not folder.is_dir():
            return {}
        found = {}
        for path in folder.iterdir():
            text = path.read_text().strip()
            if text.isdigit():
                found[path.name] = int(text)
        return found

    def resolve(self, name: str, spec: str = "") -> ModelVersion:
        """The version named by spec: a number, an alias, or "" for `latest`.

        Raises NotFound naming the model, version or alias that does not exist.
        """

        def alias(spec: str) -> int | None:  # the alias files are read only for an alias
            return self.aliases(name).get(spec)

        number = pick_version(name, spec, self.versions(name), alias)
        return self.get(name, number)

    def get(self, name: str, version: int) -> ModelVersion:
        """A version by number, with its manifest read and validated."""
        path = self.root / check_name(name) / str(version)
        if not path.is_dir():
            raise NotFound(f"model {name!r} has no version {version}")
        return ModelVersion(name, version, path, Manifest.read(path))

    def describe(self, name: str, version: int) -> ModelVersion:
        """The version as `get` returns it (a folder's files are always local)."""
        return self.get(name, version)

    def overrides(self, name: str) -> ModelOverrides:
        """The serving settings a model's `model-settings.json` overrides (none without one).

        :raises ModelLoadError: the file is malformed; the message names the field.
        """
        return ModelOverrides.read(self.root / check_name(name))

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to assemble a version in; removed unless it was published.

        The folder's lock file (`<folder>.lock`, beside it) stays locked (flock) while its
        process lives: the kernel drops the lock when the process dies, even by SIGKILL, so
        remove_stale_staging can tell an abandoned folder from one in use, whatever became
        of the process id (a zombie nobody reaped, or a number given to a new process).
        """
        staging = self.root / _STAGING
        staging.mkdir(parents=True, exist_ok=True)
        folder = staging / f"{os.getpid()}-{uuid.uuid4().hex}"
        with _locked(folder.with_name(folder.name + _LOCK)) as lock:
            try:
                folder.mkdir()
                yield folder
            finally:
                shutil.rmtree(folder, ignore_errors=True)
                lock.unlink(missing_ok=True)

    def remove_stale_staging(self) -> None:
        """Delete staging folders of processes that died mid-export (kill -9, power loss)."""
        staging = self.root / _STAGING
        if not staging.is_dir():
            return
        for path in staging.iterdir():
            if path.name.endswith(_LOCK):
                folder, lock = path.with_name(path.name.removesuffix(_LOCK)), path
                if folder.exists():
                    continue  # handled with its folder
            else:
                folder, lock = path, path.with_name(path.name + _LOCK)
            try:
                held = lock.open("rb")
            except FileNotFoundError:
                shutil.rmtree(folder, ignore_errors=True)  # its process died before locking
                continue
            with held:
                try:
                    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process is assembling it
                shutil.rmtree(folder, ignore_errors=True)
                lock.unlink(missing_ok=True)

    def publish(
        self, name: str, staged: Path, manifest: Manifest, aliases: tuple[str, ...] = (LATEST,)
    ) -> ModelVersion:
        """Turn a staged folder into the model's next version and point aliases at it.

        Records every file's sha256 in the manifest, then renames the folder into place
        (atomic on one file system). Concurrent publishers get distinct numbers.
        """
        check_name(name)
        manifest.record_files(staged)
        manifest.write(staged)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            number = max(self.versions(name), default=0) + 1
            try:
                # Version folders only ever appear through this rename, so the target
                # cannot be an empty folder that rename would silently replace.
                staged.rename(model_dir / str(number))
            except OSError:
                continue  # another publisher took this number
            break
        else:
            raise AlreadyExists(f"model {name!r}: could not allocate a new version number")
        for alias in aliases:
            self.set_alias(name, alias, number)
        return self.get(name, number)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        """Point alias at version, replacing what it pointed at in one atomic step."""
        check_name(alias, "alias")
        if alias.isdigit():
            raise InvalidArgument(f"alias {alias!r} is not valid: an alias cannot be a number")
        if version not in self.versions(name):
            raise NotFound(f"model {name!r} has no version {version}")
        folder = self.root / name / _ALIASES
        folder.mkdir(exist_ok=True)
        tmp = folder / f".{alias}.{uuid.uuid4().hex}"
        tmp.write_text(f"{version}\n")
        os.replace(tmp, folder / alias)


@contextmanager
def _locked(lock: Path) -> Iterator[Path]:
    """Create lock and hold an exclusive flock on it for the block.

    A cleaner may delete a lock file it could lock between our open and our flock; the
    inode check starts over with a fresh file then, so a held lock is always the file
    at that path.
    """
    while True:
        held = lock.open("ab")
        try:
            fcntl.flock(held, fcntl.LOCK_EX)
            try:
                same = os.stat(lock).st_ino == os.fstat(held.fileno()).st_ino
            except FileNotFoundError:
                same = False
        except BaseException:
            held.close()
            raise
        if same:
            break
        held.close()
    with held:
        yield lock
