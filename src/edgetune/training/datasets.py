"""Uploaded data sets: stored once by content, validated row by row with the task's rules.

`<home>/datasets/<id>/data` holds the file as uploaded and `dataset.json` what was learnt
from it. The id derives from the sha256, so uploading the same file twice is free.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import threading
import uuid
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from pydantic import BaseModel

from edgetune.errors import InvalidArgument, NotFound, ResourceExhausted, quoted
from edgetune.plugins.manager import Plugins
from edgetune.store.manifest import sha256_of, utc_now
from edgetune.task import Task

Example = Mapping[str, Any]


class DatasetInfo(BaseModel):
    """What is known about a stored data set."""

    id: str
    sha256: str
    rows: int
    label_counts: dict[str, int]
    format: str
    size_bytes: int
    task: str
    created: str


MIB = 2**20
INCOMING = ".incoming"


def folder_bytes(folder: Path) -> int:
    """Bytes of the regular files under folder (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


class Upload:
    """A file being received in chunks, refused as soon as it passes the size limit or its
    bytes do not fit the store's quota (reserved chunk by chunk, so concurrent uploads
    cannot together pass it)."""

    def __init__(self, store: DatasetStore) -> None:
        folder = store.root / INCOMING
        folder.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.path = folder / f"{os.getpid()}-{uuid.uuid4().hex}"
        self.limit = store.max_bytes
        self.size = 0
        self.reserved = 0
        self._file: BinaryIO = self.path.open("wb")

    def write(self, chunk: bytes) -> None:
        """Append a chunk; InvalidArgument when the file grows past the limit,
        ResourceExhausted when it would pass the quota."""
        self.size += len(chunk)
        if self.size > self.limit:
            raise InvalidArgument(f"data set is over the size limit of {self.limit} bytes")
        self.store.reserve(len(chunk))
        self.reserved += len(chunk)
        self._file.write(chunk)

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._file.closed:
            self._file.close()

    def discard(self) -> None:
        """Close and delete what was received, and give its reservation back."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.store.release(self.reserved)
        self.reserved = 0


class DatasetStore:
    """Data sets under one folder, within a disk quota (0: none)."""

    def __init__(self, root: Path, plugins: Plugins, max_bytes: int, quota_bytes: int = 0) -> None:
        self.root = root
        self.plugins = plugins
        self.max_bytes = max_bytes
        self.quota = quota_bytes
        self._lock = threading.Lock()
        self._stored: int | None = None  # bytes of stored data sets, read once from disk
        self._reserved = 0  # bytes of uploads in flight

    def begin_upload(self) -> Upload:
        """Start receiving a file; ResourceExhausted when the quota is already used up."""
        self.reserve(0)
        return Upload(self)

    def remove_stale_uploads(self) -> None:
        """Delete partial uploads a previous server process left (killed mid-upload): only
        the server writes them, so at its start every one is stale."""
        shutil.rmtree(self.root / INCOMING, ignore_errors=True)
        with self._lock:
            self._stored = None

    def reserve(self, size: int) -> None:
        """Count size bytes against the quota, or raise ResourceExhausted."""
        if not self.quota:
            return
        with self._lock:
            if self._stored is None:
                self._stored = sum(folder_bytes(p) for p in self.root.glob("ds_*") if p.is_dir())
            left = self.quota - self._stored - self._reserved
            if size > left or left <= 0:
                raise ResourceExhausted(
                    f"this data set would pass the quota of {self.quota / MIB:g} MiB for stored "
                    f"data sets (datasets_quota_mb); {max(left, 0)} bytes are left: delete some "
                    "or raise it"
                )
            self._reserved += size

    def release(self, size: int) -> None:
        """Give back bytes reserved by reserve()."""
        if self.quota and size:
            with self._lock:
                self._reserved -= size

    def _stored_more(self, folder: Path) -> None:
        if self.quota:
            with self._lock:
                if self._stored is not None:
                    self._stored += folder_bytes(folder)

    def finish_upload(
        self, upload: Upload, format_name: str, filename: str, task_name: str
    ) -> DatasetInfo:
        """Parse and validate every row of an upload, then store it under its content id."""
        upload.close()
        try:
            if upload.size == 0:
                raise InvalidArgument("data set is empty: no bytes were uploaded")
            reader = self.plugins.reader(format_name, filename)
            task = self.plugins.task(task_name)
            rows = list(reader.read(upload.path))
            counts = label_counts(task, rows)
            digest = sha256_of(upload.path)
            info = DatasetInfo(
                id="ds_" + digest[:20],
                sha256=digest,
                rows=len(rows),
                label_counts=dict(sorted(counts.items())),
                format=reader.format,
                size_bytes=upload.size,
                task=task.name,
                created=utc_now(),
            )
            folder = self.root / info.id
            if not (folder / "dataset.json").is_file():
                description = (info.model_dump_json(indent=2) + "\n").encode()
                self.reserve(len(description))  # dataset.json counts against the quota too
                upload.reserved += len(description)
                staging = self.root / INCOMING / f"{upload.path.name}.d"
                staging.mkdir()
                shutil.move(upload.path, staging / "data")
                (staging / "dataset.json").write_bytes(description)
                try:
                    staging.rename(folder)
                    self._stored_more(folder)
                except OSError:  # the same content arrived concurrently
                    shutil.rmtree(staging, ignore_errors=True)
            return self.get(info.id)
        finally:
            upload.discard()

    def add_examples(self, examples: Sequence[Example], task_name: str) -> DatasetInfo:
        """Store inline examples as a JSONL data set."""
        upload = self.begin_upload()
        try:
            for example in examples:
                upload.write((json.dumps(dict(example), ensure_ascii=False) + "\n").encode())
        except BaseException:
            upload.discard()
            raise
        return self.finish_upload(upload, "jsonl", "examples.jsonl", task_name)

    def get(self, dataset_id: str) -> DatasetInfo:
        """A stored data set; NotFound when the id is unknown."""
        if (
            len(dataset_id) > 64
            or not dataset_id.startswith("ds_")
            or not (dataset_id[3:].isascii() and dataset_id[3:].isalnum())
        ):
            raise NotFound(f"data set {quoted(dataset_id)} not found")
        try:
            return DatasetInfo.model_validate_json(
                (self.root / dataset_id / "dataset.json").read_bytes()
            )
        except FileNotFoundError:
            raise NotFound(f"data set {quoted(dataset_id)} not found") from None

    def rows(self, dataset_id: str) -> list[dict[str, Any]]:
        """Every row of a stored data set."""
        info = self.get(dataset_id)
        return list(self.plugins.reader(info.format).read(self.root / dataset_id / "data"))


def label_counts(task: Task, rows: Sequence[Example], what: str = "row") -> Counter[str]:
    """Check every row with the task and count its labels; rows are numbered from 1."""
    if not rows:
        raise InvalidArgument("data set has no rows")
    counts: Counter[str] = Counter()
    for row, example in enumerate(rows, start=1):
        try:
            counts.update(task.example_labels(example, row))
        except InvalidArgument as exc:
            raise InvalidArgument(exc.message.replace("row ", f"{what} ", 1)) from None
    return counts


def check_training_data(
    task: Task, train: Sequence[Example], validation: Sequence[Example] | None
) -> list[str]:
    """The label set of training data, after checking it can train a classifier and that
    every validation label occurs in it. Errors name the row."""
    counts = label_counts(task, train, "training row")
    labels = sorted(counts)
    if len(labels) < 2:
        raise InvalidArgument(
            f"training data has a single class {labels[0]!r}: at least two are needed"
        )
    if validation is not None:
        known = set(labels)
        label_counts(task, validation, "validation row")
        for row, example in enumerate(validation, start=1):
            for label in task.example_labels(example, row):
                if label not in known:
                    raise InvalidArgument(
                        f"validation row {row}: label {label!r} does not occur in the training data"
                    )
    return labels


def stratified_split(
    task: Task, rows: Sequence[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """(train, validation): the given fraction of each label's rows, at least one of each
    label that has two or more, chosen with a seeded shuffle (the same every time)."""
    groups: dict[tuple[str, ...], list[Example]] = defaultdict(list)
    for row, example in enumerate(rows, start=1):
        groups[tuple(task.example_labels(example, row))].append(example)
    rng = random.Random(seed)
    train: list[Example] = []
    validation: list[Example] = []
    for key in sorted(groups):
        members = groups[key][:]
        rng.shuffle(members)
        take = min(len(members) - 1, max(1, round(len(members) * fraction)))
        validation += members[:take]
        train += members[take:]
    rng.shuffle(train)
    if not validation:
        raise InvalidArgument("training data is too small to hold out a validation split")
    return train, validation
