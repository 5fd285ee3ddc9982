"""The job manager (in the server): validate and queue jobs, run each in its own process,
cancel, watch, recover after a restart, and promote results into serving.

Where a job's training process runs is the job runner's business (`edgetune.runner`, the
`job_runner` setting): a child process of the server by default, or a Ray job."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Sequence
from typing import Any

from edgetune.errors import EdgetuneError, FailedPrecondition
from edgetune.plugins.manager import Plugins
from edgetune.runner import JobRunner, RunHandle
from edgetune.serving.registry import ModelRegistry
from edgetune.settings import Settings
from edgetune.store import Repository
from edgetune.store.manifest import utc_now
from edgetune.store.repository import check_name
from edgetune.tracing import TRACEPARENT, traceparent
from edgetune.training.datasets import DatasetStore
from edgetune.training.jobstore import Event, Job, JobStore
from edgetune.training.prepare import load_data, resolve_base
from edgetune.training.results import find_published, result_of
from edgetune.training.signals import JobSignals
from edgetune.training.spec import ACTIVE_STATES, JobSpec, JobState

log = logging.getLogger(__name__)
WATCH_FALLBACK_S = 2.0
"""How long a watcher waits without a wake-up before it reads the job store anyway: only a
safety net for a writer the server hears nothing from (a pipe write dropped because the
server fell behind, a tool writing to jobs.db directly); every event the server or one of
its training processes writes wakes the watchers at once."""
CANCEL_WAIT_S = 5.0
"""How long CancelJob waits for the exit handler to record the final state."""


def settings_env(settings: Settings) -> dict[str, str]:
    """The server's effective settings as EDGETUNE_* variables for a child process."""
    env = dict(os.environ)
    for name, value in settings.flat().items():
        if value is None:
            # Unset, so the child takes the default too: str(None) would read back as the
            # relative path "None" (a worker publishing into ./None, not <home>/models).
            env.pop(f"EDGETUNE_{name.upper()}", None)
            continue
        text = json.dumps(value) if isinstance(value, list | dict) else str(value)
        env[f"EDGETUNE_{name.upper()}"] = text
    return env


class JobManager:
    """Jobs of one server: at most `max_concurrent_jobs` training processes at a time.

    :raises InvalidArgument: the `job_runner` setting names no registered runner, or the
        runner refuses the settings (naming the setting).
    """

    def __init__(
        self,
        settings: Settings,
        plugins: Plugins,
        repository: Repository,
        registry: ModelRegistry,
        datasets: DatasetStore,
        store: JobStore,
    ) -> None:
        self.settings = settings
        self.plugins = plugins
        self.repository = repository
        self.registry = registry
        self.datasets = datasets
        self.store = store
        self.signals = JobSignals()
        store.on_event = self.signals.notify
        self.runner: JobRunner = plugins.runner(settings.training.job_runner)
        self.runner.configure(settings)
        self._processes: dict[str, RunHandle] = {}
        self._cancelling: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._kick_lock = asyncio.Lock()
        self._closing = False
        self._traceparents: dict[str, str] = {}  # job -> span of the call that created it

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs a previous server left unfinished, then start queued ones."""
        self.repository.remove_stale_staging()
        for job in self.store.in_states([JobState.VALIDATING]):
            self.store.transition(
                job.id,
                JobState.FAILED,
                "failed: the server stopped while validating; create the job again",
                error="the server stopped while validating the job",
            )
        for job in self.store.in_states(ACTIVE_STATES):
            await self._recover(job)
        await self._kick()

    async def _recover(self, job: Job) -> None:
        if job.result:
            await self._finish_promotion(job)
            return
        # A local training process never outlives its server (PR_SET_PDEATHSIG); a runner
        # whose jobs do (Ray) may find this one still running, and the server follows it.
        if self.runner.survives_server and job.attempts:
            workdir = self.settings.jobs_dir / job.id
            handle = await self.runner.reattach(job, workdir, self.signals)
            if handle is not None:
                self._processes[job.id] = handle
                await asyncio.to_thread(
                    self.store.update,
                    job.id,
                    f"the server restarted; it follows the training started before "
                    f"({handle.where}, attempt {job.attempts}) instead of starting it again",
                    {},
                )
                self._spawn(self._supervise(job.id, handle))
                return
        # So this job was interrupted.
        checkpoints = self.store.checkpoints(job.id)
        where = (
            f"from the checkpoint of epoch {checkpoints[-1].epoch}"
            if checkpoints
            else "from the start (no checkpoint yet)"
        )
        if job.attempts < self.settings.training.max_job_attempts:
            self.store.transition(
                job.id,
                JobState.QUEUED,
                f"the server stopped while the job was {job.state}; it resumes {where}",
                allowed_from=ACTIVE_STATES,
                pid=0,
            )
        else:
            reason = (
                f"the server stopped while the job was {job.state}, {job.attempts} times; giving up"
            )
            self.store.transition(job.id, JobState.FAILED, f"failed: {reason}", error=reason)
            shutil.rmtree(self.settings.jobs_dir / job.id, ignore_errors=True)

    async def close(self) -> None:
        """Stop training processes; their jobs resume from a checkpoint on the next start.
        A runner whose jobs survive the server (Ray) leaves them running: the server only
        stops following them, and follows them again on its next start."""
        self._closing = True
        for job_id, process in list(self._processes.items()):
            if self.runner.survives_server:
                # It goes on without the server, which follows it again when it starts.
                await process.detach()
                continue
            job = self.store.get(job_id)
            self.store.transition(
                job_id,
                JobState.QUEUED,
                "the server is shutting down; the job resumes "
                "from its last checkpoint when it starts again",
                allowed_from=ACTIVE_STATES,
                pid=0,
                attempts=max(job.attempts - 1, 0),
            )
            await process.kill()
            await process.wait()
        for task in list(self._background):
            task.cancel()
        self.signals.close()
        self.store.close()

    # -- requests -------------------------------------------------------------------------

    async def create(self, spec: JobSpec) -> Job:
        """Validate a job's inputs and queue it; an idempotency key returns the first job."""
        task = self.plugins.task(spec.task)
        check_name(spec.model_name, "model_name")
        # The job store runs in a thread: a write waits while a training process writes.
        job, created = await asyncio.to_thread(
            self.store.create,
            spec,
            JobState.VALIDATING,
            "validating the data",
            self.settings.training.max_queued_jobs,
        )
        if not created:
            return job
        if parent := traceparent():
            self._traceparents[job.id] = parent
        try:
            await asyncio.to_thread(resolve_base, spec, self.repository)
            train, validation, labels = await asyncio.to_thread(
                load_data, spec, task, self.datasets
            )
        except EdgetuneError as exc:
            await asyncio.to_thread(
                self.store.transition,
                job.id,
                JobState.FAILED,
                f"failed: {exc.message}",
                error=exc.message,
                idempotency_key=None,
            )
            raise
        await asyncio.to_thread(
            self.store.transition,
            job.id,
            JobState.QUEUED,
            f"queued: {len(train)} training and {len(validation)} validation examples, "
            f"{len(labels)} labels",
            allowed_from=[JobState.VALIDATING],
        )
        await self._kick()
        return await asyncio.to_thread(self.store.get, job.id)

    def get(self, job_id: str) -> Job:
        """One job."""
        return self.store.get(job_id)

    def list(
        self, states: Sequence[JobState], page_size: int, page_token: str
    ) -> tuple[list[Job], str]:
        """A page of jobs, newest first."""
        return self.store.list_jobs(states, page_size, page_token)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job; a running one is stopped (SIGTERM, then SIGKILL after the grace)."""
        job = await asyncio.to_thread(self.store.get, job_id)
        if job.state.final:
            raise FailedPrecondition(f"job {job_id!r} already ended: {job.state}")
        if await asyncio.to_thread(
            self.store.transition,
            job_id,
            JobState.CANCELLED,
            "cancelled before training started",
            allowed_from=[JobState.VALIDATING, JobState.QUEUED],
        ):
            return await asyncio.to_thread(self.store.get, job_id)
        process = self._processes.get(job_id)
        if process is not None:
            self._cancelling.add(job_id)
            await process.terminate()
            try:
                await asyncio.wait_for(
                    asyncio.shield(process.wait()), self.settings.training.cancel_grace_s
                )
            except TimeoutError:
                log.warning(
                    "job %s did not stop within %.1fs; killing it",
                    job_id,
                    self.settings.training.cancel_grace_s,
                )
                await process.kill()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CANCEL_WAIT_S):
                    await self._until_final(job_id)  # the exit handler records it
        return await asyncio.to_thread(self.store.get, job_id)

    async def _until_final(self, job_id: str) -> None:
        """Return once the job is final, reading the store at each of its events."""
        with self.signals.waiter(job_id) as changed:
            while True:
                changed.clear()  # before reading, so an event after the read still wakes us
                if (await asyncio.to_thread(self.store.get, job_id)).state.final:
                    return
                await self.signals.wait(job_id, changed, WATCH_FALLBACK_S)

    async def watch(self, job_id: str, after: int = 0) -> AsyncIterator[Event]:
        """Events after `after`, then new ones as they are written, until the job is final.

        Woken by `signals` at each event of the job (written by the server or by the job's
        training process); it reads the store again after WATCH_FALLBACK_S without one.
        """
        await asyncio.to_thread(self.store.get, job_id)
        with self.signals.waiter(job_id) as changed:
            while True:
                changed.clear()  # before reading, so an event after the read still wakes us
                final, events = await asyncio.to_thread(self._read_events, job_id, after)
                for event in events:
                    yield event
                    after = event.seq
                if events:
                    continue
                if final:
                    return
                await self.signals.wait(job_id, changed, WATCH_FALLBACK_S)

    def _read_events(self, job_id: str, after: int) -> tuple[bool, Sequence[Event]]:
        """Whether the job is final, then its events after `after`: in this order, so the
        event that made it final is among the events read (a job writes none after it)."""
        final = self.store.get(job_id).state.final
        return final, self.store.events(job_id, after)

    # -- running --------------------------------------------------------------------------

    async def _kick(self) -> None:
        """Start queued jobs while there are free slots."""
        if self._closing:
            return
        async with self._kick_lock:
            queued = await asyncio.to_thread(self.store.in_states, [JobState.QUEUED])
            for job in queued:
                if len(self._processes) >= self.settings.training.max_concurrent_jobs:
                    break
                await self._start(job)

    async def _start(self, job: Job) -> None:
        workdir = self.settings.jobs_dir / job.id
        workdir.mkdir(parents=True, exist_ok=True)
        env = settings_env(self.settings)
        # The training process's spans join the trace of the call that created the job.
        env.pop(TRACEPARENT, None)
        if parent := self._traceparents.pop(job.id, ""):
            env[TRACEPARENT] = parent
        try:
            process = await self.runner.start(job, job.attempts + 1, env, workdir, self.signals)
        except EdgetuneError as exc:  # e.g. the Ray cluster cannot be reached (never local)
            reason = f"the training process could not be started: {exc.message}"
            self.store.transition(
                job.id,
                JobState.FAILED,
                f"failed: {reason}",
                allowed_from=[JobState.QUEUED],
                error=reason,
            )
            return
        self._processes[job.id] = process
        self.store.transition(
            job.id,
            JobState.RUNNING,
            f"training process started ({process.where}, attempt {job.attempts + 1})",
            allowed_from=[JobState.QUEUED],
            pid=process.pid,
            attempts=job.attempts + 1,
            started=job.started or utc_now(),
        )
        self._spawn(self._supervise(job.id, process))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _supervise(self, job_id: str, process: RunHandle) -> None:
        code = await process.wait()
        self._processes.pop(job_id, None)
        self.signals.close_pipe(job_id)
        if self._closing:
            return
        job = self.store.get(job_id)
        if job_id in self._cancelling and not job.state.final:
            published = await asyncio.to_thread(
                find_published, self.repository, job.spec.model_name, job_id
            )
            if published is not None:
                # Killed (after the cancel grace) between publishing and recording it, or
                # it recorded and exited: the version is served, so the job succeeds.
                self._cancelling.discard(job_id)
                if not job.result:
                    result = result_of(published)
                    self.store.update(job_id, "recorded the published version", {}, result=result)
                    job = self.store.get(job_id)
                await self._finish_promotion(
                    job,
                    note="; the cancel came after the version was published, too late to stop it",
                )
                await self._kick()
                return
        if job_id in self._cancelling:
            self._cancelling.discard(job_id)
            if self.store.transition(
                job_id,
                JobState.CANCELLED,
                "cancelled; the training process was stopped",
                allowed_from=ACTIVE_STATES,
            ):
                shutil.rmtree(self.settings.jobs_dir / job_id, ignore_errors=True)
                self.repository.remove_stale_staging()
        elif job.state in ACTIVE_STATES and job.result and code == 0:
            await self._finish_promotion(job)
        elif not job.state.final:
            reason = (
                f"the training process exited with code {code}; its log is "
                f"jobs/{job_id}/worker.log in the server's home"
            )
            self.store.transition(job_id, JobState.FAILED, f"failed: {reason}", error=reason)
            self.repository.remove_stale_staging()
        await self._kick()

    async def _finish_promotion(self, job: Job, note: str = "") -> None:
        """Load and warm a job's published version, switch `latest` to it (when the job
        asked for it), succeed the job."""
        result = dict(job.result)
        name, version = result["model_name"], int(result["version"])
        if not job.spec.auto_promote:
            self.store.transition(
                job.id,
                JobState.SUCCEEDED,
                f"published {name} version {version}{note}",
                allowed_from=ACTIVE_STATES,
                data={"result": result},
                result=result,
            )
            return
        try:
            await self.registry.promote(name, version)
            result["promoted"] = True
            message = f"promoted {name} version {version}: it now serves requests for {name}"
        except EdgetuneError as exc:
            message = f"published {name} version {version} but could not promote it: {exc.message}"
        self.store.transition(
            job.id,
            JobState.SUCCEEDED,
            message + note,
            allowed_from=ACTIVE_STATES,
            data={"result": result},
            result=result,
        )
