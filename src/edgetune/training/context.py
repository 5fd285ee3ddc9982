"""What one job's steps in the training process share, passed as one object instead of a
long parameter list."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgetune.plugins.manager import Plugins
from edgetune.settings import Settings
from edgetune.store import Repository
from edgetune.training.datasets import DatasetStore
from edgetune.training.faults import NO_FAULTS, Faults
from edgetune.training.jobstore import Job, JobStore


@dataclass(frozen=True)
class JobContext:
    """One job being run: the job, the stores it reads and writes, and how to stop it."""

    job: Job
    settings: Settings
    store: JobStore
    plugins: Plugins
    datasets: DatasetStore
    repository: Repository
    workdir: Path
    """The job's work folder (checkpoints, trials); removed when the job ends."""
    cancelled: Callable[[], bool]
    """True once CancelJob asked this job to stop."""
    faults: Faults = field(default=NO_FAULTS)
    """Test failpoints (inert outside the fault tests)."""

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.id

    def say(self, message: str) -> None:
        """Record a progress message as a job event."""
        self.store.update(self.job.id, message, {})
