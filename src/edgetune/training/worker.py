"""The training process: `python -m edgetune.training.worker --job ID`.

Started by the server's job manager, one process per running job, so training never runs
on the server's event loop or threads: a child of the server, or a Ray job (the job
runner, `edgetune.runner`). It reads its job from the job store (or, with `--package`, from
a job package: a Ray job away from the server's home, `training/package.py`), trains,
exports, quantizes, gates and publishes, writing progress and state back to the store.
SIGTERM cancels it; it dies with the server (PR_SET_PDEATHSIG), and the server then resumes
or fails the job on its next start. `EDGETUNE_TEST_FAULT` (tests only; unset, it does
nothing) makes it pause or run out of space at a named point: see edgetune.training.faults.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from opentelemetry import trace

from edgetune.errors import EdgetuneError
from edgetune.plugins.manager import Plugins, build_plugins
from edgetune.settings import Settings, load_settings
from edgetune.store import open_repository
from edgetune.tracing import context_from_env, tracer_provider_from_env
from edgetune.training import search
from edgetune.training.context import JobContext
from edgetune.training.datasets import DatasetStore
from edgetune.training.faults import Faults
from edgetune.training.jobstore import Job, JobStore
from edgetune.training.loop import Cancelled
from edgetune.training.package import open_package
from edgetune.training.pipeline import run_job
from edgetune.training.spec import JobState

log = logging.getLogger("edgetune.training.worker")
PR_SET_PDEATHSIG = 1


class CancelFlag:
    """Set by SIGTERM; polled by the training loop between steps."""

    def __init__(self) -> None:
        self.set = False
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.set = True

    def __call__(self) -> bool:
        return self.set


def die_with_parent() -> None:
    """Ask Linux to kill this process when the server that started it dies."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() == 1:  # the server died before prctl took effect
            sys.exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run one job to a final state."""
    parser = argparse.ArgumentParser(description="edgetune training process")
    parser.add_argument("--job", required=True)
    parser.add_argument(
        "--package",
        type=Path,
        help="run from this job package instead of the server's home (training/package.py)",
    )
    args = parser.parse_args(argv)
    die_with_parent()
    cancel = CancelFlag()
    settings = load_settings()
    if args.package is not None:
        settings, store, job = open_package(settings, args.package.resolve(), args.job)
    else:
        store = JobStore(settings.jobs_dir / "jobs.db")
        job = store.get(args.job)
    logging.basicConfig(
        level=settings.observability.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.nice(settings.training.train_nice)
    import torch

    torch.set_num_threads(settings.training.train_threads or _cores())
    workdir = settings.jobs_dir / job.id
    plugins = build_plugins(
        settings.server.plugins, autoload=not settings.server.disable_plugin_autoload
    )
    datasets = DatasetStore(settings.datasets_dir, plugins, settings.limits.max_dataset_bytes)
    provider = tracer_provider_from_env()
    if provider is not None:
        trace.set_tracer_provider(provider)
    span = trace.get_tracer("edgetune.training").start_span(
        "edgetune.job",
        context=context_from_env(),
        attributes={"edgetune.job_id": job.id, "edgetune.task": job.spec.task},
    )
    try:
        with trace.use_span(span, end_on_exit=True):
            return _run(job, settings, store, plugins, datasets, workdir, cancel)
    finally:
        if provider is not None:
            provider.shutdown()  # flushes the spans before the process exits


def _run(
    job: Job,
    settings: Settings,
    store: JobStore,
    plugins: Plugins,
    datasets: DatasetStore,
    workdir: Path,
    cancel: CancelFlag,
) -> int:
    context = JobContext(
        job,
        settings,
        store,
        plugins,
        datasets,
        open_repository(settings),
        workdir,
        cancel,
        Faults.from_env(lambda message: store.update(job.id, message, {}), cancel),
    )
    try:
        run_job(context)
    except Cancelled:
        shutil.rmtree(workdir, ignore_errors=True)
        store.transition(job.id, JobState.CANCELLED, "cancelled; partial files removed")
        return 0
    except EdgetuneError as exc:
        fail(store, job.id, workdir, exc.message)
        return 1
    except Exception as exc:
        log.exception("job %s failed", job.id)
        fail(store, job.id, workdir, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if store.get(job.id).state.final or store.get(job.id).result:
            search.forget(settings, job.id)  # its trials are in the result and the events
    return 0


def fail(store: JobStore, job_id: str, workdir: Path, reason: str) -> None:
    """Record the failure, then drop the checkpoints: a failed job never resumes, and after
    a full disk they hold the space the next job needs. worker.log stays for the reason."""
    store.transition(job_id, JobState.FAILED, f"failed: {reason}", error=reason)
    shutil.rmtree(workdir / "checkpoints", ignore_errors=True)


def _cores() -> int:
    from edgetune.serving.session import physical_cores

    return physical_cores()


if __name__ == "__main__":
    sys.exit(main())
