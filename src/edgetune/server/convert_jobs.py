"""edgetune.v1.FineTuning protobuf <-> the domain objects of `training/service.py`: requests
and upload messages in, jobs, events, data sets and bases out. No logic beyond translation
and field naming (the checks are the service's)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from typing import Any

from edgetune.errors import InvalidArgument
from edgetune.training.bases import BaseFileInfo, BaseInfo
from edgetune.training.datasets import DatasetInfo
from edgetune.training.jobstore import Event, Job
from edgetune.training.service import (
    BaseChunk,
    BaseHeader,
    DatasetHeader,
    JobRequest,
    SearchRequest,
    UploadPart,
)
from edgetune.training.spec import JobState, Range, SearchSpec
from edgetune.v1 import finetuning_pb2 as pb

STATES = {state: pb.JobState.Value(f"JOB_STATE_{state.name}") for state in JobState}
STATES_BACK = {number: state for state, number in STATES.items()}


def job_request_from_pb(request: pb.CreateJobRequest) -> JobRequest:
    """A JobRequest: each oneof as the field it set (None for the others)."""
    base = request.WhichOneof("base")
    validation = request.WhichOneof("validation")
    data = request.WhichOneof("data")
    return JobRequest(
        model_name=request.model_name,
        task=request.task,
        base_path=request.base_path if base == "base_path" else None,
        base_model=request.base_model.name if base == "base_model" else None,
        base_version=request.base_model.version if base == "base_model" else "",
        # Only the fields the request set: they are the ones a search keeps fixed.
        hyperparameters={f.name: value for f, value in request.hyperparameters.ListFields()},
        search=_search_from_pb(request.search) if request.HasField("search") else None,
        validation_dataset_id=(
            request.validation_dataset_id if validation == "validation_dataset_id" else None
        ),
        validation_split=request.validation_split if validation == "validation_split" else None,
        dataset_id=request.dataset_id if data == "dataset_id" else None,
        examples=_examples(request.examples.examples) if data == "examples" else None,
        auto_promote=request.auto_promote,
        idempotency_key=request.idempotency_key,
    )


def _search_from_pb(search: pb.Search) -> SearchRequest:
    return SearchRequest(
        trials=search.trials,
        time_budget_minutes=search.time_budget_minutes,
        metric=search.metric,
        space={
            name: Range(low=r.low, high=r.high, choices=tuple(r.choices))
            for name, r in search.space.items()
        },
    )


def _examples(examples: Sequence[pb.Example]) -> list[dict[str, str]]:
    return [
        {"text": e.text, "label": e.label, **({"text_pair": e.text_pair} if e.text_pair else {})}
        for e in examples
    ]


def states_from_pb(numbers: Sequence[int]) -> Iterator[JobState]:
    """The states a ListJobs asks for; lazily, so the service checks page_size first."""
    for index, number in enumerate(numbers):
        if number not in STATES_BACK:
            raise InvalidArgument(f"states[{index}] is not a job state")
        yield STATES_BACK[number]


async def base_parts(messages: AsyncIterable[pb.UploadBaseRequest]) -> AsyncIterator[UploadPart]:
    """The parts of an UploadBase stream, as they arrive."""
    async for message in messages:
        match message.WhichOneof("part"):
            case "header":
                files = [BaseFileInfo(f.name, f.size_bytes, f.sha256) for f in message.header.files]
                yield BaseHeader(message.header.name, files)
            case "chunk":
                yield BaseChunk(message.chunk.file, message.chunk.data)
            case _:
                yield None


async def dataset_parts(
    messages: AsyncIterable[pb.UploadDatasetRequest],
) -> AsyncIterator[UploadPart]:
    """The parts of an UploadDataset stream, as they arrive (a chunk is its bytes)."""
    async for message in messages:
        match message.WhichOneof("part"):
            case "header":
                header = message.header
                yield DatasetHeader(header.format, header.filename, header.task)
            case "chunk":
                yield message.chunk
            case _:
                yield None


def jobs_page_to_pb(page: tuple[list[Job], str]) -> pb.ListJobsResponse:
    """A ListJobsResponse from a page of jobs and the next page's token."""
    jobs, token = page
    return pb.ListJobsResponse(jobs=[job_to_pb(job) for job in jobs], next_page_token=token)


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
