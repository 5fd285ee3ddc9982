"""The fine-tuning service without gRPC (training/service.py): uploads, the checks and
assembly of a job spec, listing, cancelling and watching (woken by events, not polling)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import jsonl, sentiment_rows

from edgetune.errors import InvalidArgument, NotFound, ResourceExhausted
from edgetune.plugins.manager import Plugins
from edgetune.serving.registry import ModelRegistry
from edgetune.settings import Settings
from edgetune.store import ModelRepository
from edgetune.training import jobs as jobs_module
from edgetune.training.bases import BaseFileInfo, BaseStore
from edgetune.training.datasets import DatasetStore
from edgetune.training.jobs import JobManager
from edgetune.training.jobstore import EVENTS_FD, JobStore
from edgetune.training.service import (
    BaseChunk,
    BaseHeader,
    DatasetHeader,
    FineTuningService,
    JobRequest,
    SearchRequest,
    UploadPart,
)
from edgetune.training.spec import JobSpec, JobState, Range

TASK = "text-classification"


@pytest.fixture
def manager(settings: Settings, plugins: Plugins, repository: ModelRepository) -> Iterator[Any]:
    datasets = DatasetStore(settings.datasets_dir, plugins, settings.limits.max_dataset_bytes)
    store = JobStore(settings.jobs_dir / "jobs.db")
    registry = ModelRegistry(repository, plugins, settings)
    yield JobManager(settings, plugins, repository, registry, datasets, store)
    store.close()


@pytest.fixture
def service(manager: JobManager, settings: Settings) -> FineTuningService:
    bases = BaseStore(
        settings.bases_dir, settings.limits.max_base_file_bytes, settings.limits.max_base_bytes, 0
    )
    return FineTuningService(manager, manager.datasets, bases)


@pytest.fixture
def specs(manager: JobManager, monkeypatch: pytest.MonkeyPatch) -> list[JobSpec]:
    """The specs the service hands the manager, recorded as queued jobs (nothing trains)."""
    seen: list[JobSpec] = []

    async def create(spec: JobSpec) -> Any:
        seen.append(spec)
        return manager.store.create(spec, JobState.QUEUED, "queued")[0]

    monkeypatch.setattr(manager, "create", create)
    return seen


async def parts(*items: UploadPart) -> AsyncIterator[UploadPart]:
    for item in items:
        yield item


async def dataset(service: FineTuningService, task: str = TASK) -> str:
    header = DatasetHeader("jsonl", "rows.jsonl", task)
    info = await service.upload_dataset(parts(header, jsonl(sentiment_rows(30))))
    return info.id


async def test_uploads_store_a_data_set_and_a_base(service: FineTuningService) -> None:
    data = jsonl(sentiment_rows(30))
    header = DatasetHeader("jsonl", "rows.jsonl", TASK)
    info = await service.upload_dataset(parts(header, data[:100], data[100:]))
    assert (info.rows, info.task, info.size_bytes) == (30, TASK, len(data))

    contents = {"config.json": b'{"model_type": "bert"}', "model.safetensors": b"weights"}
    files = [BaseFileInfo(n, len(b), hashlib.sha256(b).hexdigest()) for n, b in contents.items()]
    chunks = [BaseChunk(name, body) for name, body in contents.items()]
    base = await service.upload_base(parts(BaseHeader("b1", files), *chunks))
    assert base.name == "b1" and sorted(f.name for f in base.files) == sorted(contents)
    assert [b.name for b in await service.list_bases()] == ["b1"]
    await service.delete_base("b1")
    assert await service.list_bases() == []


async def test_an_upload_starts_with_one_header(service: FineTuningService) -> None:
    header = DatasetHeader("jsonl", "rows.jsonl", TASK)
    cases = [
        (service.upload_dataset(parts(b"{}")), "the first UploadDataset message must be a header"),
        (service.upload_dataset(parts()), "no header: the first UploadDataset message must be"),
        (service.upload_dataset(parts(header, header)), "only the first UploadDataset message"),
        (service.upload_dataset(parts(header, None)), "only the first UploadDataset message"),
        (service.upload_base(parts(BaseChunk("a", b""))), "the first UploadBase message must"),
        (service.upload_base(parts()), "no header: the first UploadBase message must be"),
    ]
    for call, expected in cases:
        with pytest.raises(InvalidArgument) as caught:
            await call
        assert caught.value.message.startswith(expected), caught.value.message
    with pytest.raises(InvalidArgument, match=r"^header.task is required \(tasks: .*text-class"):
        await service.upload_dataset(parts(DatasetHeader("jsonl", "rows.jsonl", "")))
    assert not list((service.datasets.root / "incoming").glob("*"))  # every upload discarded


async def test_a_spec_is_assembled_from_the_request(
    service: FineTuningService, specs: list[JobSpec], tiny_bert: Path
) -> None:
    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}] * 10
    job = await service.create_job(
        JobRequest(
            model_name="m",
            task=TASK,
            base_path=str(tiny_bert),
            hyperparameters={"epochs": 2},
            examples=rows,
            idempotency_key="k",
        )
    )
    (spec,) = specs
    assert job.spec == spec and job.state == JobState.QUEUED
    assert spec.base_path == str(await asyncio.to_thread(tiny_bert.resolve))
    assert spec.hyperparameters.epochs == 2 and spec.hyperparameters.batch_size == 16
    assert (spec.search.trials, spec.search.fixed) == (1, ["epochs"])  # set: a single run
    stored = service.datasets.get(spec.dataset_id)
    assert (stored.rows, stored.task) == (20, TASK)

    searched = await service.create_job(
        JobRequest(
            model_name="m2",
            base_model="tiny",  # the task is the model's
            dataset_id=spec.dataset_id,
            validation_split=0.25,
            search=SearchRequest(metric="f1", space={"epochs": Range(low=1, high=3)}),
        )
    )
    assert (searched.spec.task, searched.spec.base_model) == (TASK, "tiny")
    assert searched.spec.search.trials > 1 and searched.spec.search.metric == "f1"
    assert searched.spec.validation_split == 0.25


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"model_name": ""}, "model_name is required"),
        ({"task": ""}, "task is required (tasks: "),
        ({"base_path": None}, "base_path or base_model is required"),
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs: "),
        ({"search": SearchRequest(metric="loss")}, "search.metric 'loss' is not one of"),
        (
            {"search": SearchRequest(space={"seed": Range(low=1, high=2)})},
            "search.space['seed']: not a hyperparameter a search varies",
        ),
        (
            {"search": SearchRequest(space={"epochs": Range(low=3, high=1)})},
            "search.space['epochs']: the range is empty or inverted",
        ),
        (
            {"search": SearchRequest(space={"epochs": Range(choices=(1.5,))})},
            "search.space['epochs']: 1.5 is not a whole number",
        ),
        ({"base_path": "/etc"}, "base_path '/etc' is outside the folders base models"),
        ({"base_path": "a/../b"}, "base_path 'a/../b' must not contain '..'"),
        ({"base_path": " "}, "base_path is empty"),
        ({"task": "", "base_path": None, "base_model": ""}, "task is required"),
        ({"base_path": None, "base_model": ""}, "base_model.name is required"),
        ({"dataset_id": None}, "dataset_id or examples is required"),
        ({"dataset_id": None, "examples": []}, "examples is empty"),
    ],
)
async def test_a_bad_request_is_refused_naming_the_field(
    service: FineTuningService, specs: list[JobSpec], fields: dict[str, Any], expected: str
) -> None:
    request = {"model_name": "m", "task": TASK, "base_path": "tiny", "dataset_id": "ds_x"}
    with pytest.raises(InvalidArgument) as caught:
        await service.create_job(JobRequest(**(request | fields)))
    assert caught.value.message.startswith(expected), caught.value.message
    assert not specs


async def test_the_data_must_be_checked_for_the_jobs_task(
    service: FineTuningService, specs: list[JobSpec], tiny_bert: Path
) -> None:
    other = await dataset(service, "multi-label-classification")
    request = JobRequest(model_name="m", task=TASK, base_path=str(tiny_bert), dataset_id=other)
    with pytest.raises(InvalidArgument, match="was checked for task 'multi-label-classif"):
        await service.create_job(request)
    with pytest.raises(NotFound, match="data set 'ds_nope' not found"):
        await service.create_job(
            JobRequest(model_name="m", task=TASK, base_path=str(tiny_bert), dataset_id="ds_nope")
        )


@pytest.mark.settings(models_quota_mb=0.001)  # the seeded model alone is more
async def test_the_models_quota_refuses_new_jobs(
    service: FineTuningService, settings: Settings, specs: list[JobSpec]
) -> None:
    with pytest.raises(ResourceExhausted, match="quota \\(models_quota_mb\\)"):
        await service.create_job(JobRequest(model_name="m", task=TASK))


async def test_list_and_cancel(
    service: FineTuningService, specs: list[JobSpec], tiny_bert: Path
) -> None:
    data = await dataset(service)
    ids = []
    for name in ("a", "b"):
        request = JobRequest(model_name=name, task=TASK, base_path=str(tiny_bert), dataset_id=data)
        ids.append((await service.create_job(request)).id)
    jobs, token = await service.list_jobs([JobState.QUEUED], 1, "")
    assert [j.id for j in jobs] == [ids[1]] and token
    cancelled = await service.cancel_job(ids[1])
    assert cancelled.state == JobState.CANCELLED
    assert [j.id for j in (await service.list_jobs([JobState.QUEUED], 0, ""))[0]] == [ids[0]]
    assert (await service.get_job(ids[1])).state == JobState.CANCELLED

    def bad_states() -> Iterator[JobState]:
        raise InvalidArgument("states[0] is not a job state")
        yield JobState.QUEUED

    with pytest.raises(InvalidArgument, match="page_size 501 is over the limit of 500"):
        await service.list_jobs(bad_states(), 501, "")  # page_size first, states after
    with pytest.raises(InvalidArgument, match="states"):
        await service.list_jobs(bad_states(), 1, "")


@pytest.fixture
def no_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Watchers that only a wake-up can move on: the fallback read is a minute away."""
    monkeypatch.setattr(jobs_module, "WATCH_FALLBACK_S", 60.0)


async def queued_job(service: FineTuningService, tiny_bert: Path) -> str:
    data = await dataset(service)
    request = JobRequest(model_name="w", task=TASK, base_path=str(tiny_bert), dataset_id=data)
    return (await service.create_job(request)).id


async def test_watch_streams_in_order_resumes_and_ends(
    service: FineTuningService, specs: list[JobSpec], tiny_bert: Path, no_fallback: None
) -> None:
    job_id = await queued_job(service, tiny_bert)
    store = service.jobs.store
    seen: list[tuple[int, str]] = []
    first = asyncio.Event()

    async def watch(after: int) -> None:
        async for event in service.watch_job(job_id, after):
            seen.append((event.seq, event.message))
            first.set()

    watcher = asyncio.create_task(watch(0))
    await first.wait()
    # It has read everything there is: only a wake-up (the fallback is a minute away) can
    # bring it the events below within the 10 s the test gives it.
    assert seen == [(1, "queued")]
    # Written from threads, as the service does: each one wakes the watcher.
    await asyncio.to_thread(store.transition, job_id, JobState.RUNNING, "started")
    await asyncio.to_thread(store.update, job_id, "epoch 1", {"progress": {"epoch": 1}})
    await asyncio.to_thread(store.transition, job_id, JobState.FAILED, "failed: test")
    await asyncio.wait_for(watcher, 10)
    assert seen == [(1, "queued"), (2, "started"), (3, "epoch 1"), (4, "failed: test")]

    resumed = [event.seq async for event in service.watch_job(job_id, 2)]
    assert resumed == [3, 4]  # a final job: what is left, then the end
    with pytest.raises(NotFound):
        await anext(service.watch_job("job_nope", 0))


async def test_watch_wakes_at_an_event_another_process_writes(
    service: FineTuningService, specs: list[JobSpec], tiny_bert: Path, no_fallback: None
) -> None:
    """The training process's store writes a line per event to the manager's pipe."""
    job_id = await queued_job(service, tiny_bert)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from edgetune.training.jobstore import JobStore
        from edgetune.training.spec import JobState
        store = JobStore(Path({str(service.jobs.store.path)!r}))
        store.transition({job_id!r}, JobState.RUNNING, "from the worker")
        sys.stdin.readline()  # until the test has seen that event
        store.transition({job_id!r}, JobState.CANCELLED, "cancelled in the worker")
        """
    )
    messages: list[str] = []
    first = asyncio.Event()

    async def watch() -> None:
        async for event in service.watch_job(job_id, 1):
            messages.append(event.message)
            first.set()

    watcher = asyncio.create_task(watch())
    write_end = service.jobs.signals.open_pipe(job_id)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            env=dict(os.environ) | {EVENTS_FD: str(write_end)},
            pass_fds=(write_end,),
            stdin=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    await asyncio.wait_for(first.wait(), 30)
    assert process.stdin is not None
    process.stdin.write(b"go\n")  # the second event comes after the watcher saw the first
    await process.stdin.drain()
    await asyncio.wait_for(watcher, 30)
    assert messages == ["from the worker", "cancelled in the worker"]
    assert await process.wait() == 0
    service.jobs.signals.close_pipe(job_id)


def test_a_process_without_the_pipe_notifies_no_one(tmp_path: Path) -> None:
    """The variable is read once and removed, so a grandchild never writes to a stranger."""
    script = (
        "import os; from pathlib import Path; from edgetune.training.jobstore import JobStore; "
        f"s = JobStore(Path({str(tmp_path / 'jobs.db')!r})); "
        f"print(s.on_event is None, {EVENTS_FD!r} in os.environ)"
    )
    closed = subprocess.run(
        [sys.executable, "-c", script],
        env=dict(os.environ) | {EVENTS_FD: "987"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert closed.stdout.split() == ["True", "False"]  # fd 987 is not open there
