"""The transport-free fine-tuning service: uploads of data sets and bases, and jobs
(create, get, list, cancel, watch), as domain objects in and out.

edgetune.v1.FineTuning translates protobuf to the request types here and calls this; it
checks what the job manager and the stores do not (the models quota, that base_path stays
inside the folders bases are taken from, that a data set was checked for the job's task),
assembles the JobSpec and runs every disk and SQLite call in a thread. It imports no torch:
the server process never loads it (`extras.py`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from edgetune.errors import InvalidArgument, ResourceExhausted, quoted
from edgetune.extras import require_train
from edgetune.training.bases import BaseFileInfo, BaseInfo, BaseStore, BaseUpload
from edgetune.training.datasets import MIB, DatasetInfo, DatasetStore
from edgetune.training.jobs import JobManager
from edgetune.training.jobstore import Event, Job
from edgetune.training.spec import SEARCHABLE, Hyperparameters, JobSpec, JobState, Range, SearchSpec

MAX_PAGE_SIZE = 500
MAX_PATH_CHARS = 4096
DEFAULT_TRIALS = SearchSpec.model_fields["trials"].default
PENDING_DATASET = "ds_" + "0" * 20
"""Stands for inline examples not stored yet, while the rest of a job spec is checked."""


@dataclass(frozen=True, slots=True)
class BaseHeader:
    """The first part of a base upload: its name and declared files."""

    name: str
    files: list[BaseFileInfo]


@dataclass(frozen=True, slots=True)
class BaseChunk:
    """Bytes of one declared file of a base upload."""

    file: str
    data: bytes


@dataclass(frozen=True, slots=True)
class DatasetHeader:
    """The first part of a data-set upload."""

    format: str
    filename: str
    task: str


UploadPart = BaseHeader | BaseChunk | DatasetHeader | bytes | None
"""One message of an upload: a header, a chunk (bytes for a data set), None for no part."""


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """The search a CreateJob asks for (zero values: the defaults)."""

    trials: int = 0
    time_budget_minutes: float = 0.0
    metric: str = ""
    space: dict[str, Range] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobRequest:
    """A CreateJob request as given, before any check.

    `base_path` or `base_model` is the base (None: not given); `hyperparameters` holds only
    the fields the request set; `examples` are inline rows (None: not given)."""

    model_name: str
    task: str = ""
    base_path: str | None = None
    base_model: str | None = None
    base_version: str = ""
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    search: SearchRequest | None = None
    validation_dataset_id: str | None = None
    validation_split: float | None = None
    dataset_id: str | None = None
    examples: list[dict[str, str]] | None = None
    auto_promote: bool = False
    idempotency_key: str = ""


class FineTuningService:
    """Data sets, bases and jobs of one server."""

    def __init__(self, jobs: JobManager, datasets: DatasetStore, bases: BaseStore) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.bases = bases

    # -- uploads --------------------------------------------------------------------------

    async def upload_base(self, parts: AsyncIterable[UploadPart]) -> BaseInfo:
        """A header, then each file's chunks: checked and stored (discarded on any error)."""
        upload: BaseUpload | None = None
        try:
            async for part in parts:
                if upload is None:
                    if not isinstance(part, BaseHeader):
                        raise InvalidArgument("the first UploadBase message must be a header")
                    upload = await asyncio.to_thread(self.bases.begin, part.name, part.files)
                elif isinstance(part, BaseChunk):
                    await asyncio.to_thread(self.bases.write, upload, part.file, part.data)
                else:
                    raise InvalidArgument("only the first UploadBase message may be a header")
            if upload is None:
                raise InvalidArgument("no header: the first UploadBase message must be a header")
            return await asyncio.to_thread(self.bases.finish, upload)
        except BaseException:
            if upload is not None:
                await asyncio.to_thread(self.bases.discard, upload)
            raise

    async def list_bases(self) -> list[BaseInfo]:
        """The stored bases."""
        return await asyncio.to_thread(self.bases.list)

    async def delete_base(self, name: str) -> None:
        """Remove a stored base."""
        await asyncio.to_thread(self.bases.delete, name)

    async def upload_dataset(self, parts: AsyncIterable[UploadPart]) -> DatasetInfo:
        """A header, then chunks (size and quota checked as they arrive): parsed, checked
        for the header's task and stored content-addressed."""
        header: DatasetHeader | None = None
        upload = await asyncio.to_thread(self.datasets.begin_upload)
        try:
            async for part in parts:
                if header is None:
                    if not isinstance(part, DatasetHeader):
                        raise InvalidArgument("the first UploadDataset message must be a header")
                    header = part
                    if not header.task:
                        self._no_task("header.task")
                elif isinstance(part, bytes):
                    await asyncio.to_thread(upload.write, part)
                else:
                    raise InvalidArgument("only the first UploadDataset message may be a header")
            if header is None:
                raise InvalidArgument("no header: the first UploadDataset message must be a header")
        except BaseException:
            await asyncio.to_thread(upload.discard)
            raise
        return await asyncio.to_thread(
            self.datasets.finish_upload, upload, header.format, header.filename, header.task
        )

    # -- jobs -----------------------------------------------------------------------------

    async def create_job(self, request: JobRequest) -> Job:
        """Check a request, assemble its JobSpec and hand it to the manager to validate
        and queue (an idempotency key returns the first job)."""
        require_train("fine-tuning")
        return await self.jobs.create(await self._spec(request))

    async def get_job(self, job_id: str) -> Job:
        """One job."""
        return await asyncio.to_thread(self.jobs.get, job_id)

    async def list_jobs(
        self, states: Iterable[JobState], page_size: int, page_token: str
    ) -> tuple[list[Job], str]:
        """A page of jobs (newest first) and the next page's token; page_size 0: 50.

        `states` is read after page_size is checked, so a converter may raise on a bad
        state lazily and the errors come in the order of the fields."""
        if page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(f"page_size {page_size} is over the limit of {MAX_PAGE_SIZE}")
        wanted = list(states)
        return await asyncio.to_thread(self.jobs.list, wanted, page_size or 50, page_token)

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a job and return it once it has stopped."""
        return await self.jobs.cancel(job_id)

    def watch_job(self, job_id: str, after_sequence: int) -> AsyncIterator[Event]:
        """The job's events after after_sequence, in order, until it is final."""
        return self.jobs.watch(job_id, after_sequence)

    # -- the job spec ---------------------------------------------------------------------

    def _no_task(self, field: str) -> NoReturn:
        known = ", ".join(sorted(self.jobs.plugins.tasks))
        raise InvalidArgument(f"{field} is required (tasks: {known})")

    async def _check_quota(self) -> None:
        quota = int(self.jobs.settings.limits.models_quota_mb * MIB)
        if quota:
            # A bucket's objects for an s3:// repository, the folder's files otherwise.
            used = await asyncio.to_thread(self.jobs.repository.used_bytes)
            if used >= quota:
                raise ResourceExhausted(
                    f"the model repository uses {used // MIB} MiB of its {quota // MIB} MiB "
                    "quota (models_quota_mb): delete versions or raise it before training more"
                )

    async def _task(self, request: JobRequest) -> str:
        """The request's task; by default the task of the repository model it starts from."""
        if request.task:
            return self.jobs.plugins.task(request.task).name
        if request.base_path is None and request.base_model:
            base = await asyncio.to_thread(
                self.jobs.repository.resolve, request.base_model, request.base_version
            )
            return base.manifest.task
        self._no_task("task")

    async def _check_dataset(self, field: str, dataset_id: str, task: str) -> None:
        checked_for = (await asyncio.to_thread(self.datasets.get, dataset_id)).task
        if checked_for != task:
            raise InvalidArgument(
                f"{field} {dataset_id} was checked for task {checked_for!r}, not {task!r}: "
                f"upload it with header.task = {task!r}"
            )

    async def _spec(self, request: JobRequest) -> JobSpec:
        """The JobSpec, checked field by field in the order the errors have always come."""
        if not request.model_name:
            raise InvalidArgument("model_name is required")
        await self._check_quota()
        task = await self._task(request)
        if request.base_path is None and request.base_model is None:
            raise InvalidArgument("base_path or base_model is required")
        fields: dict[str, Any] = {
            "task": task,
            "model_name": request.model_name,
            "auto_promote": request.auto_promote,
            "idempotency_key": request.idempotency_key,
            "hyperparameters": _hyperparameters(request.hyperparameters),
            "search": self._search(request, task),
        }
        if request.base_path is not None:
            fields["base_path"] = str(await asyncio.to_thread(self._confined, request.base_path))
        else:
            if not request.base_model:
                raise InvalidArgument("base_model.name is required")
            fields["base_model"] = request.base_model
            fields["base_version"] = request.base_version
        if request.validation_dataset_id is not None:
            vid = request.validation_dataset_id
            await self._check_dataset("validation_dataset_id", vid, task)
            fields["validation_dataset_id"] = vid
        elif request.validation_split is not None:
            fields["validation_split"] = request.validation_split
        # Last: inline examples are stored (within the data-set quota) only for a request
        # whose other fields are valid.
        if request.dataset_id is not None:
            fields["dataset_id"] = request.dataset_id
            await self._check_dataset("dataset_id", request.dataset_id, task)
        elif request.examples is not None:
            if not request.examples:
                raise InvalidArgument("examples is empty")
            _job_spec(fields | {"dataset_id": PENDING_DATASET})  # every other field first
            rows = request.examples
            stored = await asyncio.to_thread(self.datasets.add_examples, rows, task)
            fields["dataset_id"] = stored.id
        else:
            raise InvalidArgument("dataset_id or examples is required")
        return _job_spec(fields)

    def _confined(self, raw: str) -> Path:
        """base_path resolved inside `<home>/bases` or a `base_dirs` folder, or refused."""
        settings = self.jobs.settings
        path = Path(raw)
        if not raw.strip():
            raise InvalidArgument("base_path is empty")
        if len(raw) > MAX_PATH_CHARS:
            raise InvalidArgument(f"base_path is longer than {MAX_PATH_CHARS} characters")
        if "\x00" in raw:
            raise InvalidArgument("base_path contains a NUL character")
        if ".." in path.parts:
            raise InvalidArgument(f"base_path {quoted(raw)} must not contain '..'")
        roots = [settings.bases_dir, *settings.training.base_dirs]
        resolved = (path if path.is_absolute() else settings.bases_dir / path).resolve()
        if any(resolved.is_relative_to(root.resolve()) for root in roots):
            return resolved
        raise InvalidArgument(
            f"base_path {quoted(raw)} is outside the folders base models are taken from "
            "(<home>/bases and the base_dirs setting): put it under <home>/bases or add its "
            "folder to base_dirs"
        )

    def _search(self, request: JobRequest, task: str) -> SearchSpec:
        """The job's search: as asked; by default a search when the request sets no
        hyperparameter, else a single run with them."""
        fixed = list(request.hyperparameters)
        asked = request.search
        if asked is None:
            return SearchSpec(trials=1 if fixed else DEFAULT_TRIALS, fixed=fixed)
        metrics = self.jobs.plugins.task(task).search_metrics
        if asked.metric and asked.metric not in metrics:
            raise InvalidArgument(
                f"search.metric {quoted(asked.metric)} is not one of the metrics of "
                f"{task}: {', '.join(metrics)}"
            )
        space = {name: _range(name, r) for name, r in asked.space.items()}
        try:
            return SearchSpec(
                trials=asked.trials or DEFAULT_TRIALS,
                time_budget_minutes=asked.time_budget_minutes,
                metric=asked.metric,
                space=space,
                fixed=fixed,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InvalidArgument(f"search.{first['loc'][0]}: {first['msg']}") from None


def _job_spec(fields: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"{where}: {first['msg']}") from None


def _hyperparameters(given: dict[str, Any]) -> Hyperparameters:
    """The fields a request set; the others take the defaults."""
    try:
        return Hyperparameters(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidArgument(f"hyperparameters.{first['loc'][0]}: {first['msg']}") from None


def _range(name: str, r: Range) -> Range:
    """One search range, checked: a known hyperparameter, low < high or choices, values
    the hyperparameter takes."""
    field = f"search.space[{quoted(name, 32)}]"
    if name not in SEARCHABLE:
        raise InvalidArgument(
            f"{field}: not a hyperparameter a search varies ({', '.join(SEARCHABLE)})"
        )
    values = list(r.choices)
    if values and (r.low or r.high):
        raise InvalidArgument(f"{field}: give low and high, or choices, not both")
    if not values:
        if not r.low < r.high:
            raise InvalidArgument(
                f"{field}: the range is empty or inverted (low {r.low:g}, high {r.high:g}); "
                "low must be below high"
            )
        values = [r.low, r.high]
    integer = Hyperparameters.model_fields[name].annotation in (int, "int")
    for value in values:
        if integer and not float(value).is_integer():
            raise InvalidArgument(f"{field}: {value:g} is not a whole number")
        try:
            Hyperparameters.model_validate({name: int(value) if integer else value})
        except ValidationError as exc:
            raise InvalidArgument(f"{field}: {value:g}: {exc.errors()[0]['msg']}") from None
    return Range(low=r.low, high=r.high, choices=tuple(r.choices))
