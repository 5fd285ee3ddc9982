"""The built-in "local" job runner: each attempt is a child process of the server.

The process writes its output to `<home>/jobs/<id>/worker.log` and one line per event to a
pipe the server reads (`EDGETUNE_JOB_EVENTS_FD`, see `training/signals.py`). It dies with
the server (PR_SET_PDEATHSIG), so a job never outlives its server: after a restart it
resumes from its last checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from edgetune.runner import WORKER_MODULE, JobRunner, RunHandle
from edgetune.training.jobstore import EVENTS_FD, Job
from edgetune.training.signals import JobSignals


class LocalHandle(RunHandle):
    """A training process that is a child of the server."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.pid = process.pid
        self.where = f"pid {process.pid}"

    async def wait(self) -> int:
        return await self.process.wait()

    async def terminate(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)

    async def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class LocalRunner(JobRunner):
    """`python -m edgetune.training.worker --job ID` as a child process of the server."""

    name = "local"

    async def start(
        self, job: Job, attempt: int, env: dict[str, str], workdir: Path, signals: JobSignals
    ) -> RunHandle:
        # The process writes a line per event to this pipe, which wakes the job's watchers.
        events = signals.open_pipe(job.id)
        env = {**env, EVENTS_FD: str(events)}
        try:
            with (workdir / "worker.log").open("ab") as log_file:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    WORKER_MODULE,
                    "--job",
                    job.id,
                    env=env,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    pass_fds=(events,),
                )
        except BaseException:
            signals.close_pipe(job.id)
            raise
        finally:
            os.close(events)  # the child holds its copy: EOF comes when it exits
        return LocalHandle(process)
