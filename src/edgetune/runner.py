"""The job-runner contract: where a fine-tuning job's training process runs.

The server's job manager (`edgetune.training.jobs`) queues, cancels, watches and promotes
jobs; a `JobRunner` only starts one attempt of a job's training process
(`python -m edgetune.training.worker --job ID`) somewhere and hands back a `RunHandle` to
wait for it and stop it. The `job_runner` setting (`EDGETUNE_JOB_RUNNER`) names the runner;
plugins register runners with the `edgetune_register_job_runners` hook. Built in: "local"
(a child process of the server, the default) and "ray" (a Ray job, the `ray` extra).

Whatever runs the worker, the worker writes the job's events, state and result to the job
store and publishes through the model repository of the settings it is given, so a job
behaves the same on every runner: same events, metrics, cancel and result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from edgetune.settings import Settings
    from edgetune.training.jobstore import Job
    from edgetune.training.signals import JobSignals

WORKER_MODULE = "edgetune.training.worker"
"""The module a runner runs with `python -m`, followed by `--job ID`."""


class RunHandle(ABC):
    """One attempt of one job's training process, as the manager sees it."""

    where: str
    """Where it runs, for events: "pid 1234", "Ray job job_ab12 on http://head:8265"."""

    pid: int = 0
    """Its process id when it is a child of the server; 0 otherwise."""

    @abstractmethod
    async def wait(self) -> int:
        """Until the process has ended; its exit code (0 success). May be awaited by several
        coroutines at once (the supervisor and a cancel)."""

    @abstractmethod
    async def terminate(self) -> None:
        """Ask it to stop (SIGTERM: the training loop stops between steps)."""

    @abstractmethod
    async def kill(self) -> None:
        """Stop it now (after terminate's grace ran out, or at shutdown)."""

    async def detach(self) -> None:  # noqa: B027 - optional hook
        """Stop following it without stopping it: the server is shutting down and the
        runner's jobs survive that (`JobRunner.survives_server`)."""


class JobRunner(ABC):
    """Starts a job's training process and finds it again after a server restart."""

    name: ClassVar[str]
    """What `EDGETUNE_JOB_RUNNER` names to pick it, e.g. "local"."""

    survives_server: ClassVar[bool] = False
    """True when a job keeps running while the server is down: at shutdown the server
    detaches from it (instead of stopping and re-queuing it) and at start `reattach` finds
    it again. False: a job dies with its server and resumes from its checkpoint."""

    def configure(self, settings: Settings) -> None:  # noqa: B027 - optional hook
        """Called once at start-up when the settings pick this runner.

        :raises InvalidArgument: a setting it needs is missing or wrong, or a package it
            needs is not installed; the message names the setting.
        """

    @abstractmethod
    async def start(
        self, job: Job, attempt: int, env: dict[str, str], workdir: Path, signals: JobSignals
    ) -> RunHandle:
        """Start attempt number `attempt` (1, 2, ...) of job's training process.

        :param env: the process's environment: the server's own plus every setting as an
            EDGETUNE_* variable (and the trace context of the call that created the job).
        :param workdir: the job's work folder in the server's home; `worker.log` there is
            where the process's output is expected to go.
        :param signals: call `signals.notify(job.id)` whenever the process wrote an event
            (watchers then read the job store at once instead of after a fallback delay).
        """

    async def reattach(self, job: Job, workdir: Path, signals: JobSignals) -> RunHandle | None:
        """After a server restart, the attempt of job (`job.attempts`) that may still run:
        a handle when the runner finds it (running, or ended while nobody watched), None
        when it is gone, and the job is then resumed or failed as after a crash."""
        return None
