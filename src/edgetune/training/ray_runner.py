"""The "ray" job runner: each attempt of a fine-tuning job is a job on a Ray cluster.

`EDGETUNE_JOB_RUNNER=ray` with `EDGETUNE_RAY_ADDRESS` (the cluster's dashboard, e.g.
`http://head:8265`); the `ray` extra (`pip install 'edgetune[ray]'`). This module imports
Ray only inside the runner's methods, so a server that does not pick it never loads Ray.

Why the Ray Jobs API (`JobSubmissionClient`) and not Ray Core (a remote task or actor):

- A Ray job belongs to the cluster, not to the process that submitted it: it keeps
  training while the server restarts, where a task or actor would die with its driver
  (the server) unless detached, and a detached actor cannot be waited on after the
  driver is gone without more bookkeeping.
- It has a stable id of our choosing: the submission id is the edgetune job id (plus
  `-attempt<N>` from the second attempt on), so a restarted server finds its job again by
  name (`get_job_info`) and never submits the same attempt twice.
- Its output streams (`tail_job_logs`): the server copies it to the job's `worker.log`
  and wakes the job's watchers at each event line (see below); cancel is `stop_job`
  (SIGTERM, then SIGKILL after the grace, as locally); the end state and exit code come
  from `get_job_info`.
- The entrypoint is the same worker module a local job runs (`python -m
  edgetune.training.worker --job ID`), so training, export, gate and publish are the
  same code on both runners.

What the Ray workers need: the same edgetune (with the `train` extra) as `python` on the
node that runs the job, and either

- the server's home (`EDGETUNE_HOME`: the job store `jobs/jobs.db`, checkpoints, data sets,
  bases) at the same path, i.e. one machine or a shared file system (`ray_shared_home`,
  the default): the worker writes its events to the job store as it does locally and
  prints a marker line per event on stdout, which reaches the server through the log
  stream and wakes the watchers (there is no pipe across machines); or
- nothing of it (`ray_shared_home` false): the job's data sets, base folder and record go
  to the cluster as the Ray job's working_dir (a job package, `training/package.py`); the
  worker keeps its own job store and checkpoints on its node and prints each event with
  the job's fields as a record line, which the server writes into its own store, once
  (a log read again after a restart repeats none). Its checkpoints stay on the node: a
  job the cluster no longer has when the server starts again resumes from the start.

The model repository is whatever the settings name (a shared folder or `s3://`; for S3 the
cluster's own credentials are used: AWS_* variables are not sent). The job gets the
server's settings as EDGETUNE_* variables (and OTEL_*, the trace context) in its runtime
environment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import shlex
import shutil
from collections.abc import Callable
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from edgetune.errors import InvalidArgument, Unavailable
from edgetune.runner import WORKER_MODULE, JobRunner, RunHandle
from edgetune.settings import Settings
from edgetune.tracing import TRACEPARENT
from edgetune.training.jobstore import (
    EVENT_MARKER,
    EVENTS_FD,
    EVENTS_STDOUT,
    REMOTE_MARKER,
    Job,
    JobStore,
)
from edgetune.training.package import build_package
from edgetune.training.signals import JobSignals

log = logging.getLogger(__name__)

FORWARDED_PREFIXES = ("EDGETUNE_", "OTEL_")
"""Variables of the server's environment the Ray job gets (besides TRACEPARENT)."""
RETRY_S = 1.0
"""Pause before following a job's log again after its stream ended before the job did
(the dashboard restarted, the connection dropped): the cluster signals nothing else."""
LOST_AFTER_S = 120.0
"""How long the cluster may stay unreachable before the server gives the attempt up."""
LOST = -1
"""The exit code of an attempt the server lost track of (the cluster stayed unreachable)."""


def submission_id(job_id: str, attempt: int) -> str:
    """The Ray submission id of one attempt of a job: the job id for the first."""
    return job_id if attempt == 1 else f"{job_id}-attempt{attempt}"


class RayRunner(JobRunner):
    """Runs each attempt as a Ray job through the Jobs API (see the module's docstring)."""

    name = "ray"
    survives_server = True

    def __init__(self) -> None:
        self.address = ""
        self.stop_wait_s = 10
        self._client: Any = None
        self._settings: Settings | None = None
        self._store: JobStore | None = None
        """Where the records of jobs away from the server's home are written; None while
        the nodes share the home (the workers write the store themselves)."""

    def configure(self, settings: Settings) -> None:
        if find_spec("ray") is None:
            raise InvalidArgument(
                "setting EDGETUNE_JOB_RUNNER: 'ray' needs the ray extra, which this install "
                "lacks: pip install 'edgetune[ray]'"
            )
        if not settings.training.ray_address:
            raise InvalidArgument(
                "setting EDGETUNE_RAY_ADDRESS: EDGETUNE_JOB_RUNNER=ray needs the address of "
                "the Ray cluster's dashboard (Jobs API), e.g. http://127.0.0.1:8265"
            )
        if settings.training.ray_address != self.address:
            self._client = None
        runtime = settings.runtime
        if not settings.training.ray_shared_home and not (
            runtime.repository_dir or runtime.repository_url.startswith(("s3://", "file://"))
        ):
            raise InvalidArgument(
                "setting EDGETUNE_RAY_SHARED_HOME: false needs a model repository the Ray "
                "nodes reach (EDGETUNE_REPOSITORY_URL=s3://bucket/prefix, or "
                "EDGETUNE_REPOSITORY_DIR on a shared mount); the default <home>/models is "
                "on the server's disk only"
            )
        self.address = settings.training.ray_address
        # Ray's own grace between SIGTERM and SIGKILL when a job is stopped: the cancel's.
        self.stop_wait_s = max(1, math.ceil(settings.training.cancel_grace_s))
        self._settings = settings
        self._store = None
        if not settings.training.ray_shared_home:
            self._store = JobStore(settings.jobs_dir / "jobs.db", on_event=lambda job_id: None)

    async def _connect(self) -> Any:
        if self._client is None:
            self._client = await asyncio.to_thread(self._new_client)
        return self._client

    def _new_client(self) -> Any:
        from ray.job_submission import JobSubmissionClient

        try:
            return JobSubmissionClient(self.address)
        except Exception as exc:  # requests' ConnectionError, Ray's RuntimeError, ...
            raise Unavailable(
                f"cannot reach the Ray cluster at EDGETUNE_RAY_ADDRESS={self.address}: "
                f"{type(exc).__name__}: {exc}"
            ) from None

    async def start(
        self, job: Job, attempt: int, env: dict[str, str], workdir: Path, signals: JobSignals
    ) -> RunHandle:
        client = await self._connect()
        sid = submission_id(job.id, attempt)
        if await asyncio.to_thread(_info, client, sid) is None:
            job_env = {
                key: value
                for key, value in env.items()
                if key.startswith(FORWARDED_PREFIXES) or key == TRACEPARENT
            }
            job_env.pop(EVENTS_FD, None)
            job_env |= {
                EVENTS_STDOUT: "1",
                "PYTHONUNBUFFERED": "1",
                "RAY_JOB_STOP_WAIT_TIME_S": str(self.stop_wait_s),
            }
            entrypoint = f"python -m {WORKER_MODULE} --job {shlex.quote(job.id)}"
            runtime_env: dict[str, Any] = {"env_vars": job_env}
            package = workdir / "package"
            try:
                if self._store is not None and self._settings is not None:
                    # The entrypoint runs in the working_dir, unpacked on the node.
                    await asyncio.to_thread(build_package, self._settings, job, attempt, package)
                    runtime_env["working_dir"] = str(package)
                    entrypoint += " --package ."
                await asyncio.to_thread(
                    client.submit_job,
                    entrypoint=entrypoint,
                    submission_id=sid,
                    runtime_env=runtime_env,
                    metadata={"edgetune_job": job.id, "edgetune_attempt": str(attempt)},
                    entrypoint_num_cpus=1,
                )
            except Exception as exc:  # no room for the package, over Ray's upload limit...
                raise Unavailable(
                    f"job {sid} could not be submitted to the Ray cluster at {self.address}: "
                    f"{type(exc).__name__}: {str(exc)[:500]}"
                ) from None
            finally:  # submit_job uploaded it to the cluster, or failed
                shutil.rmtree(package, ignore_errors=True)
        # else: a server that died between submitting and recording it submitted this
        # attempt already; follow that one rather than start the job twice.
        return self._handle(client, job.id, attempt, workdir, signals)

    def _handle(
        self,
        client: Any,
        job_id: str,
        attempt: int,
        workdir: Path,
        signals: JobSignals,
        note: str = "",
    ) -> RayHandle:
        """A handle following attempt `attempt` of job_id; it writes the attempt's record
        lines into the server's store when the workers do not write it themselves."""
        record = None
        if self._store is not None:
            record = functools.partial(_record, self._store, job_id, attempt)
        return RayHandle(
            client,
            submission_id(job_id, attempt),
            self.address,
            job_id,
            workdir / "worker.log",
            signals,
            note,
            record,
        )

    async def reattach(self, job: Job, workdir: Path, signals: JobSignals) -> RunHandle | None:
        client = await self._connect()
        sid = submission_id(job.id, job.attempts)
        if await asyncio.to_thread(_info, client, sid) is None:
            return None  # the cluster has no such job (it was restarted): resume or fail
        note = f"--- the server restarted; the log of Ray job {sid} again from its start ---\n"
        return self._handle(client, job.id, job.attempts, workdir, signals, note)


def _record(store: JobStore, job_id: str, attempt: int, lines: list[str]) -> None:
    """Write an attempt's record lines (REMOTE_MARKER) into the server's store."""
    for line in lines:
        try:
            store.record_remote(job_id, attempt, json.loads(line[len(REMOTE_MARKER) :]))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("Ray job of %s: a record line that is none: %s", job_id, exc)


def _info(client: Any, sid: str) -> Any:
    """The Ray job's JobDetails, or None when the cluster has no job of that id."""
    try:
        return client.get_job_info(sid)
    except RuntimeError as exc:
        if "does not exist" in str(exc):
            return None
        raise Unavailable(f"the Ray cluster could not tell about job {sid}: {exc}") from None


class RayHandle(RunHandle):
    """One Ray job, followed through its log stream until it ends."""

    def __init__(
        self,
        client: Any,
        sid: str,
        address: str,
        job_id: str,
        log_path: Path,
        signals: JobSignals,
        note: str = "",
        record: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.client = client
        self.submission_id = sid
        self.job_id = job_id
        self.where = f"Ray job {sid} on {address}"
        self.signals = signals
        self._log_path = log_path
        self._note = note
        self._record = record
        self._follower: asyncio.Task[int] | None = None

    async def wait(self) -> int:
        # Following starts here, once the manager recorded the attempt, so the first record
        # lines find the job in it.
        if self._follower is None:
            self._follower = asyncio.create_task(self._follow(self._note))
        return await asyncio.shield(self._follower)

    async def terminate(self) -> None:
        await asyncio.to_thread(self.client.stop_job, self.submission_id)

    async def kill(self) -> None:
        # Ray SIGKILLs a stopped job's processes after RAY_JOB_STOP_WAIT_TIME_S (the
        # cancel grace); asking again makes sure the stop was requested.
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.client.stop_job, self.submission_id)

    async def detach(self) -> None:
        if self._follower is None:
            return
        self._follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._follower

    async def _follow(self, note: str) -> int:
        """Copy the job's output to worker.log, wake the watchers at each event line, and
        return the exit code once Ray says the job ended."""
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        unreachable_since: float | None = None
        loop = asyncio.get_running_loop()
        with self._log_path.open("ab") as log_file:
            if note:
                log_file.write(note.encode())
            while True:
                pending = ""
                try:
                    async for chunk in self.client.tail_job_logs(self.submission_id):
                        log_file.write(chunk.encode())
                        log_file.flush()
                        lines = (pending + chunk).split("\n")
                        pending = lines.pop()
                        records = [line for line in lines if line.startswith(REMOTE_MARKER)]
                        if records and self._record is not None:
                            await asyncio.to_thread(self._record, records)
                        if records or any(line.startswith(EVENT_MARKER) for line in lines):
                            self.signals.notify(self.job_id)
                    info = await asyncio.to_thread(_info, self.client, self.submission_id)
                except Exception as exc:  # the stream or the cluster went away
                    log.warning("following Ray job %s: %s", self.submission_id, exc)
                    info = None
                    unreachable_since = unreachable_since or loop.time()
                    if loop.time() - unreachable_since > LOST_AFTER_S:
                        log.error(
                            "lost Ray job %s: the cluster stayed unreachable for %.0fs",
                            self.submission_id,
                            LOST_AFTER_S,
                        )
                        return LOST
                else:
                    unreachable_since = None
                if info is None and unreachable_since is None:
                    return LOST  # the cluster forgot the job (it was restarted)
                if info is not None and info.status.is_terminal():
                    self.signals.notify(self.job_id)
                    return _exit_code(info)
                await asyncio.sleep(RETRY_S)


def _exit_code(info: Any) -> int:
    if info.driver_exit_code is not None:
        return int(info.driver_exit_code)
    return {"SUCCEEDED": 0, "STOPPED": -15}.get(str(info.status.value), 1)
