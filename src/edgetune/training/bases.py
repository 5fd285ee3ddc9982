"""Base models uploaded over gRPC, stored as folders under `<home>/bases/<name>/`.

An upload declares every file up front (name, size, sha256), so the size limits and the
quota are checked before a byte is stored; bytes then go to a staging folder, each file
checked against its size and sha256 as it ends, and the folder is renamed into place only
once it is a model folder edgetune may load (config.json and safetensors weights). Only
file kinds that cannot run code are taken: JSON, text, sentencepiece `.model` files and
safetensors; pickle weights are refused naming the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from edgetune.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, quoted
from edgetune.exporters.onnx import check_model_folder
from edgetune.store.manifest import sha256_of
from edgetune.training.datasets import MIB, folder_bytes

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
ALLOWED_SUFFIXES = (".json", ".txt", ".model", ".safetensors")
"""File kinds a base may hold: none of them is loaded with pickle."""
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".h5", ".msgpack", ".npz")
UPLOADS = ".uploads"
RECORDS = ".records"
"""`<root>/.records/<name>.json`: an uploaded base's checked files, so listing it does not
hash gigabytes again."""
MAX_FILES = 64


@dataclass(frozen=True, slots=True)
class BaseFileInfo:
    """One declared file."""

    name: str
    size_bytes: int
    sha256: str


@dataclass(slots=True)
class BaseInfo:
    """A stored base."""

    name: str
    files: list[BaseFileInfo]

    @property
    def size_bytes(self) -> int:
        """Total size of its files."""
        return sum(f.size_bytes for f in self.files)


@dataclass(slots=True)
class BaseUpload:
    """An upload in progress: the declared files and the one being written."""

    name: str
    files: list[BaseFileInfo]
    folder: Path
    index: int = 0
    written: int = 0
    digest: Any = field(default_factory=hashlib.sha256)
    out: BinaryIO | None = None


def check_base_name(name: str, field: str = "header.name") -> str:
    """A base name: letters, digits, '.', '_', '-', 1 to 128 characters, not starting
    with '.' (so never a hidden folder or a path); the error names `field`."""
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{field} {quoted(name)} must be 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def check_file_name(name: str, where: str) -> str:
    """A file a base may hold; the error names it."""
    if "/" in name or "\\" in name or name in ("", ".", "..") or ".." in name:
        raise InvalidArgument(f"{where} {quoted(name)}: a file name without folders is required")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"{where} {quoted(name)} must be letters, digits, '.', '_' or '-' (at most 128)"
        )
    lower = name.lower()
    if lower.endswith(PICKLE_SUFFIXES):
        raise InvalidArgument(
            f"{where} {quoted(name)} is a pickle checkpoint, which can run code when loaded: "
            "upload safetensors weights (save_pretrained(safe_serialization=True))"
        )
    if not lower.endswith(ALLOWED_SUFFIXES):
        raise InvalidArgument(
            f"{where} {quoted(name)} is not a file a base takes "
            f"({', '.join(ALLOWED_SUFFIXES)} only)"
        )
    return name


class BaseStore:
    """Stored base models and uploads in progress, within size limits and a quota."""

    def __init__(self, root: Path, max_file_bytes: int, max_bytes: int, quota_bytes: int) -> None:
        self.root = root
        self.max_file_bytes = max_file_bytes
        self.max_bytes = max_bytes
        self.quota_bytes = quota_bytes

    def remove_stale_uploads(self) -> None:
        """Drop uploads a previous process left unfinished."""
        shutil.rmtree(self.root / UPLOADS, ignore_errors=True)

    def begin(self, name: str, files: list[BaseFileInfo]) -> BaseUpload:
        """Check the header against the names, limits and quota; open a staging folder."""
        check_base_name(name)
        if not files:
            raise InvalidArgument("header.files is empty: declare every file of the base")
        if len(files) > MAX_FILES:
            raise InvalidArgument(f"header.files has {len(files)} files; the limit is {MAX_FILES}")
        seen: set[str] = set()
        for index, item in enumerate(files):
            where = f"header.files[{index}].name"
            check_file_name(item.name, where)
            if item.name in seen:
                raise InvalidArgument(f"{where} {quoted(item.name)} is declared twice")
            seen.add(item.name)
            if not _SHA256.fullmatch(item.sha256):
                raise InvalidArgument(
                    f"header.files[{index}].sha256 must be 64 lowercase hex digits"
                )
            if item.size_bytes > self.max_file_bytes:
                raise ResourceExhausted(
                    f"header.files[{index}] {quoted(item.name)} is {item.size_bytes} bytes; "
                    f"the limit is {self.max_file_bytes} (max_base_file_bytes)"
                )
        total = sum(item.size_bytes for item in files)
        if total > self.max_bytes:
            raise ResourceExhausted(
                f"the base is {total} bytes; the limit is {self.max_bytes} (max_base_bytes)"
            )
        if (self.root / name).exists():
            raise AlreadyExists(f"a base named {name!r} exists: delete it first or pick a name")
        if self.quota_bytes:
            used = folder_bytes(self.root)
            if used + total > self.quota_bytes:
                raise ResourceExhausted(
                    f"the base needs {total / MIB:.1f} MiB but stored bases use "
                    f"{used / MIB:.1f} MiB of their {self.quota_bytes / MIB:.0f} MiB quota "
                    "(bases_quota_mb): delete a base first"
                )
        folder = self.root / UPLOADS / uuid.uuid4().hex
        folder.mkdir(parents=True)
        return BaseUpload(name, list(files), folder)

    def write(self, upload: BaseUpload, file: str, data: bytes) -> None:
        """Append the next bytes of `file`: the current file, or the next one in header
        order once the current one is complete (it is checked then)."""
        if file not in {f.name for f in upload.files}:
            raise InvalidArgument(f"chunk.file {quoted(file)} is not declared in the header")
        while upload.index < len(upload.files) and upload.files[upload.index].name != file:
            self._close_file(upload)
        if upload.index >= len(upload.files):
            raise InvalidArgument(
                f"chunk.file {quoted(file)}: its bytes came already (files come in header order)"
            )
        current = upload.files[upload.index]
        if upload.written + len(data) > current.size_bytes:
            raise InvalidArgument(
                f"chunk.file {current.name!r} is longer than its declared "
                f"{current.size_bytes} bytes"
            )
        if upload.out is None:
            upload.out = (upload.folder / current.name).open("wb")
        upload.out.write(data)
        upload.digest.update(data)
        upload.written += len(data)

    def finish(self, upload: BaseUpload) -> BaseInfo:
        """Check the last files, check the folder, and store the base under its name."""
        while upload.index < len(upload.files):
            self._close_file(upload)
        check_model_folder(upload.folder, f"base {upload.name!r}")
        target = self.root / upload.name
        try:
            os.rename(upload.folder, target)  # atomic; fails when the name was taken since
        except OSError:
            raise AlreadyExists(f"a base named {upload.name!r} exists") from None
        record = self.root / RECORDS / f"{upload.name}.json"
        record.parent.mkdir(exist_ok=True)
        record.write_text(json.dumps([dataclasses.asdict(f) for f in upload.files]))
        return BaseInfo(upload.name, upload.files)

    def discard(self, upload: BaseUpload) -> None:
        """Throw an unfinished upload away."""
        if upload.out is not None:
            upload.out.close()
        shutil.rmtree(upload.folder, ignore_errors=True)

    def _close_file(self, upload: BaseUpload) -> None:
        current = upload.files[upload.index]
        if upload.out is None:  # an empty file: no chunk came
            upload.out = (upload.folder / current.name).open("wb")
        upload.out.close()
        if upload.written != current.size_bytes:
            raise InvalidArgument(
                f"file {current.name!r}: {upload.written} bytes arrived, "
                f"{current.size_bytes} were declared"
            )
        if upload.digest.hexdigest() != current.sha256:
            raise InvalidArgument(
                f"file {current.name!r}: its sha256 is {upload.digest.hexdigest()}, "
                f"not the declared {current.sha256}"
            )
        upload.index += 1
        upload.written, upload.digest, upload.out = 0, hashlib.sha256(), None

    def list(self) -> list[BaseInfo]:
        """Every stored base (uploaded or copied in), by name."""
        if not self.root.is_dir():
            return []
        return [
            self._info(folder)
            for folder in sorted(self.root.iterdir())
            if folder.is_dir() and _NAME.fullmatch(folder.name)
        ]

    def delete(self, name: str) -> None:
        """Remove a stored base."""
        folder = self.root / check_base_name(name, "name")
        if not folder.is_dir():
            raise NotFound(f"base {name!r} not found")
        shutil.rmtree(folder)
        (self.root / RECORDS / f"{name}.json").unlink(missing_ok=True)

    def _info(self, folder: Path) -> BaseInfo:
        """The base's files: from its upload record while the folder still holds exactly
        those files (names and sizes), else hashed now (a folder put there by hand)."""
        on_disk = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        record = self.root / RECORDS / f"{folder.name}.json"
        try:
            recorded = [BaseFileInfo(**f) for f in json.loads(record.read_text())]
        except (OSError, ValueError, TypeError):
            recorded = []
        if recorded and on_disk == {f.name: f.size_bytes for f in recorded}:
            return BaseInfo(folder.name, recorded)
        files = [
            BaseFileInfo(name, size, sha256_of(folder / name))
            for name, size in sorted(on_disk.items())
        ]
        return BaseInfo(folder.name, files)
