"""edgetune.v1.FineTuning: protobuf in -> job manager / data-set store -> protobuf out."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from edgetune.errors import InvalidArgument, ResourceExhausted, quoted
from edgetune.extras import require_train
from edgetune.training.bases import BaseFileInfo, BaseInfo, BaseStore, BaseUpload
from edgetune.training.datasets import MIB, DatasetInfo, DatasetStore, folder_bytes
from edgetune.training.jobs import JobManager
from edgetune.training.jobstore import Event, Job
from edgetune.training.spec import (
    SEARCHABLE,
    Hyperparameters,
    JobSpec,
    JobState,
    Range,
    SearchSpec,
)
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

Context = Any  # grpc.aio.ServicerContext
MAX_PAGE_SIZE = 500
MAX_PATH_CHARS = 4096
DEFAULT_TRIALS = SearchSpec.model_fields["trials"].default
PENDING_DATASET = "ds_" + "0" * 20
"""Stands for inline examples not stored yet, while the rest of a job spec is checked."""


STATES = {state: pb.JobState.Value(f"JOB_STATE_{state.name}") for state in JobState}
STATES_BACK = {number: state for state, number in STATES.items()}


class FineTuningServicer(finetuning_pb2_grpc.FineTuningServicer):
    """edgetune.v1.FineTuning."""

    def __init__(self, jobs: JobManager, datasets: DatasetStore, bases: BaseStore) -> None:
        self.jobs = jobs
        self.datasets = datasets
        self.bases = bases

    async def UploadBase(
        self, request_iterator: AsyncIterator[pb.UploadBaseRequest], context: Context
    ) -> pb.Base:
        """Receive the header and each file's chunks, check them, store the base."""
        upload: BaseUpload | None = None
        try:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if upload is None:
                    if part != "header":
                        raise InvalidArgument("the first UploadBase message must be a header")
                    files = [
                        BaseFileInfo(f.name, f.size_bytes, f.sha256) for f in message.header.files
                    ]
                    upload = await asyncio.to_thread(self.bases.begin, message.header.name, files)
                elif part == "chunk":
                    chunk = message.chunk
                    await asyncio.to_thread(self.bases.write, upload, chunk.file, chunk.data)
                else:
                    raise InvalidArgument("only the first UploadBase message may be a header")
            if upload is None:
                raise InvalidArgument("no header: the first UploadBase message must be a header")
            return base_to_pb(await asyncio.to_thread(self.bases.finish, upload))
        except BaseException:
            if upload is not None:
                await asyncio.to_thread(self.bases.discard, upload)
            raise

    async def ListBases(
        self, request: pb.ListBasesRequest, context: Context
    ) -> pb.ListBasesResponse:
        """The stored bases."""
        bases = await asyncio.to_thread(self.bases.list)
        return pb.ListBasesResponse(bases=[base_to_pb(base) for base in bases])

    async def DeleteBase(
        self, request: pb.DeleteBaseRequest, context: Context
    ) -> pb.DeleteBaseResponse:
        """Remove a stored base."""
        await asyncio.to_thread(self.bases.delete, request.name)
        return pb.DeleteBaseResponse()

    async def UploadDataset(
        self, request_iterator: AsyncIterator[pb.UploadDatasetRequest], context: Context
    ) -> pb.Dataset:
        """Receive the header and chunks, then validate and store the file."""
        header: pb.DatasetHeader | None = None
        upload = await asyncio.to_thread(self.datasets.begin_upload)
        try:
            async for message in request_iterator:
                part = message.WhichOneof("part")
                if header is None:
                    if part != "header":
                        raise InvalidArgument("the first UploadDataset message must be a header")
                    header = message.header
                    if not header.task:
                        self._no_task("header.task")
                elif part == "chunk":
                    upload.write(message.chunk)
                else:
                    raise InvalidArgument("only the first UploadDataset message may be a header")
        except BaseException:
            upload.discard()
            raise
        if header is None:
            upload.discard()
            raise InvalidArgument("no header: the first UploadDataset message must be a header")
        info = await asyncio.to_thread(
            self.datasets.finish_upload,
            upload,
            header.format,
            header.filename,
            header.task,
        )
        return dataset_to_pb(info)

    async def CreateJob(self, request: pb.CreateJobRequest, context: Context) -> pb.Job:
        """Validate and queue a job."""
        require_train("fine-tuning")
        spec = await self._spec(request)
        return job_to_pb(await self.jobs.create(spec))

    def _no_task(self, field: str) -> NoReturn:
        known = ", ".join(sorted(self.jobs.plugins.tasks))
        raise InvalidArgument(f"{field} is required (tasks: {known})")

    async def _task(self, request: pb.CreateJobRequest) -> str:
        """The request's task; by default the task of the repository model it starts from."""
        if request.task:
            return self.jobs.plugins.task(request.task).name
        if request.WhichOneof("base") == "base_model" and request.base_model.name:
            base = await asyncio.to_thread(
                self.jobs.repository.resolve, request.base_model.name, request.base_model.version
            )
            return base.manifest.task
        self._no_task("task")

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
        roots = [settings.bases_dir, *settings.base_dirs]
        resolved = (path if path.is_absolute() else settings.bases_dir / path).resolve()
        if any(resolved.is_relative_to(root.resolve()) for root in roots):
            return resolved
        raise InvalidArgument(
            f"base_path {quoted(raw)} is outside the folders base models are taken from "
            "(<home>/bases and the base_dirs setting): put it under <home>/bases or add its "
            "folder to base_dirs"
        )

    def _check_dataset(self, field: str, dataset_id: str, task: str) -> None:
        checked_for = self.datasets.get(dataset_id).task
        if checked_for != task:
            raise InvalidArgument(
                f"{field} {dataset_id} was checked for task {checked_for!r}, not {task!r}: "
                f"upload it with header.task = {task!r}"
            )

    async def _spec(self, request: pb.CreateJobRequest) -> JobSpec:
        if not request.model_name:
            raise InvalidArgument("model_name is required")
        quota = int(self.jobs.settings.models_quota_mb * MIB)
        if quota:
            used = await asyncio.to_thread(folder_bytes, self.jobs.settings.models_dir)
            if used >= quota:
                raise ResourceExhausted(
                    f"the model repository uses {used // MIB} MiB of its {quota // MIB} MiB "
                    "quota (models_quota_mb): delete versions or raise it before training more"
                )
        task = await self._task(request)
        base = request.WhichOneof("base")
        if base is None:
            raise InvalidArgument("base_path or base_model is required")
        fields: dict[str, Any] = {
            "task": task,
            "model_name": request.model_name,
            "auto_promote": request.auto_promote,
            "idempotency_key": request.idempotency_key,
            "hyperparameters": _hyperparameters(request.hyperparameters),
            "search": self._search(request, task),
        }
        if base == "base_path":
            fields["base_path"] = str(self._confined(request.base_path))
        else:
            if not request.base_model.name:
                raise InvalidArgument("base_model.name is required")
            fields["base_model"] = request.base_model.name
            fields["base_version"] = request.base_model.version
        match request.WhichOneof("validation"):
            case "validation_dataset_id":
                self._check_dataset("validation_dataset_id", request.validation_dataset_id, task)
                fields["validation_dataset_id"] = request.validation_dataset_id
            case "validation_split":
                fields["validation_split"] = request.validation_split
        # Last: inline examples are stored (within the data-set quota) only for a request
        # whose other fields are valid.
        match request.WhichOneof("data"):
            case "dataset_id":
                fields["dataset_id"] = request.dataset_id
                self._check_dataset("dataset_id", request.dataset_id, task)
            case "examples":
                rows = [
                    {
                        "text": e.text,
                        "label": e.label,
                        **({"text_pair": e.text_pair} if e.text_pair else {}),
                    }
                    for e in request.examples.examples
                ]
                if not rows:
                    raise InvalidArgument("examples is empty")
                _job_spec(fields | {"dataset_id": PENDING_DATASET})  # every other field first
                stored = await asyncio.to_thread(self.datasets.add_examples, rows, task)
                fields["dataset_id"] = stored.id
            case _:
                raise InvalidArgument("dataset_id or examples is required")
        return _job_spec(fields)

    def _search(self, request: pb.CreateJobRequest, task: str) -> SearchSpec:
        """The job's search: as asked; by default a search when the request sets no
        hyperparameter, else a single run with them."""
        fixed = [field.name for field, _ in request.hyperparameters.ListFields()]
        if not request.HasField("search"):
            return SearchSpec(trials=1 if fixed else DEFAULT_TRIALS, fixed=fixed)
        asked = request.search
        metrics = self.jobs.plugins.task(task).search_metrics
        if asked.metric and asked.metric not in metrics:
            raise InvalidArgument(
                f"search.metric {quoted(asked.metric)} is not one of the metrics of "
                f"{task}: {', '.join(metrics)}"
            )
        space = {}
        for name, r in asked.space.items():
            space[name] = _range(name, r)
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

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        """One job."""
        return job_to_pb(self.jobs.get(request.id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        """A page of jobs."""
        if request.page_size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size {request.page_size} is over the limit of {MAX_PAGE_SIZE}"
            )
        states = []
        for index, number in enumerate(request.states):
            if number not in STATES_BACK:
                raise InvalidArgument(f"states[{index}] is not a job state")
            states.append(STATES_BACK[number])
        jobs, token = self.jobs.list(states, request.page_size or 50, request.page_token)
        return pb.ListJobsResponse(jobs=[job_to_pb(job) for job in jobs], next_page_token=token)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        """Cancel a job and return it once it has stopped."""
        return job_to_pb(await self.jobs.cancel(request.id))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        """Stream a job's events until it is final."""
        async for event in self.jobs.watch(request.id, request.after_sequence):
            yield event_to_pb(event)


def _job_spec(fields: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidArgument(f"{where}: {first['msg']}") from None


def _range(name: str, r: pb.Range) -> Range:
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
            Hyperparameters(**{name: int(value) if integer else value})
        except ValidationError as exc:
            raise InvalidArgument(f"{field}: {value:g}: {exc.errors()[0]['msg']}") from None
    return Range(low=r.low, high=r.high, choices=tuple(r.choices))


def search_to_pb(search: SearchSpec) -> pb.Search:
    """A Search message from a job's search."""
    return pb.Search(
        trials=search.trials,
        time_budget_minutes=search.time_budget_minutes,
        metric=search.metric,
        space={
            name: pb.Range(low=r.low, high=r.high, choices=r.choices)
            for name, r in search.space.items()
        },
    )


def _hyperparameters(message: pb.Hyperparameters) -> Hyperparameters:
    """Zero fields take the defaults."""
    given = {field.name: value for field, value in message.ListFields()}
    try:
        return Hyperparameters(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidArgument(f"hyperparameters.{first['loc'][0]}: {first['msg']}") from None


def dataset_to_pb(info: DatasetInfo) -> pb.Dataset:
    """A Dataset message."""
    return pb.Dataset(
        id=info.id,
        sha256=info.sha256,
        rows=info.rows,
        label_counts=info.label_counts,
        format=info.format,
        size_bytes=info.size_bytes,
        task=info.task,
    )


def progress_to_pb(progress: dict[str, Any]) -> pb.Progress:
    """A Progress message from stored progress."""
    return pb.Progress(**progress)


TRIAL_STATES = {
    "complete": pb.TRIAL_STATE_COMPLETE,
    "pruned": pb.TRIAL_STATE_PRUNED,
    "failed": pb.TRIAL_STATE_FAILED,
}


def trial_to_pb(trial: dict[str, Any]) -> pb.Trial:
    """A Trial message from a stored trial."""
    return pb.Trial(
        **{**trial, "state": TRIAL_STATES[trial["state"]]},
    )


def result_to_pb(result: dict[str, Any]) -> pb.JobResult:
    """A JobResult message from a stored result."""
    if not result:
        return pb.JobResult()
    trials = [trial_to_pb(t) for t in result.get("trials", [])]
    return pb.JobResult(**{**result, "trials": trials})


def job_to_pb(job: Job) -> pb.Job:
    """A Job message."""
    spec = job.spec
    return pb.Job(
        id=job.id,
        state=STATES[job.state],
        task=spec.task,
        model_name=spec.model_name,
        base_model=spec.base_label,
        dataset_id=spec.dataset_id,
        validation_dataset_id=spec.validation_dataset_id,
        hyperparameters=pb.Hyperparameters(**spec.hyperparameters.model_dump()),
        progress=progress_to_pb(job.progress),
        metrics=job.metrics,
        result=result_to_pb(job.result),
        error=job.error,
        auto_promote=spec.auto_promote,
        created=job.created,
        started=job.started,
        finished=job.finished,
        idempotency_key=spec.idempotency_key,
        search=search_to_pb(spec.search),
    )


def event_to_pb(event: Event) -> pb.JobEvent:
    """A JobEvent message."""
    data = event.data
    return pb.JobEvent(
        sequence=event.seq,
        time=event.time,
        state=STATES[event.state],
        message=event.message,
        progress=progress_to_pb(data.get("progress", {})),
        metrics=data.get("metrics", {}),
        result=result_to_pb(data.get("result", {})),
        trial=trial_to_pb(data["trial"]) if "trial" in data else None,
        baseline=data.get("baseline"),
    )


def base_to_pb(base: BaseInfo) -> pb.Base:
    """A Base message."""
    return pb.Base(
        name=base.name,
        files=[
            pb.BaseFile(name=f.name, size_bytes=f.size_bytes, sha256=f.sha256) for f in base.files
        ],
        size_bytes=base.size_bytes,
    )
