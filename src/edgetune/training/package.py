"""A job package: what a training process needs when it runs where the server's home is not
(a Ray job on a node without a shared file system, `ray_shared_home` false).

The server lays the package out as a home of its own plus the job record:

    job.json                   the job (id, spec, attempt) as the server's store has it
    base/                      the base folder, when the job starts from one (base_path)
    home/datasets/<id>/        the job's data sets, as in the server's home

and the runner ships it (Ray's working_dir). The training process then runs with that home
(`open_package`): its own job store, work folder, checkpoints and search study, on the node.
Its events go back as REMOTE_MARKER lines on stdout, which the server records in its own
store (`JobStore.record_remote`). A base model from the repository (`base_model`) and the
published version go through the model repository of the settings, which the nodes must
reach (S3, or a shared mount); AWS credentials are the cluster's own.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgetune.errors import InvalidArgument
from edgetune.settings import Settings
from edgetune.store.manifest import utc_now
from edgetune.training.jobstore import Job, JobStore, RemoteRecorder
from edgetune.training.spec import JobSpec, JobState

JOB_FILE = "job.json"
BASE_DIR = "base"
HOME_DIR = "home"


def build_package(settings: Settings, job: Job, attempt: int, folder: Path) -> Path:
    """Lay out attempt `attempt` of job's package in folder (replacing what is there)."""
    shutil.rmtree(folder, ignore_errors=True)
    spec = job.spec
    datasets = folder / HOME_DIR / "datasets"
    datasets.mkdir(parents=True)
    for dataset_id in filter(None, (spec.dataset_id, spec.validation_dataset_id)):
        shutil.copytree(settings.datasets_dir / dataset_id, datasets / dataset_id)
    if spec.base_path:
        shutil.copytree(spec.base_path, folder / BASE_DIR)
    record = {
        "id": job.id,
        "created": job.created,
        "started": job.started or utc_now(),
        "attempt": attempt,
        "spec": spec.model_dump(mode="json"),
    }
    (folder / JOB_FILE).write_text(json.dumps(record))
    return folder


def open_package(settings: Settings, folder: Path, job_id: str) -> tuple[Settings, JobStore, Job]:
    """The settings, job store and job of a training process run from a package: the
    package's home instead of the server's, and a store that reports each event on stdout.

    :raises InvalidArgument: the package holds another job.
    """
    record = json.loads((folder / JOB_FILE).read_text())
    if record["id"] != job_id:
        raise InvalidArgument(f"the job package in {folder} is job {record['id']}, not {job_id}")
    settings = settings.replace(home=folder / HOME_DIR, repository_cache_dir=None)
    spec = JobSpec.model_validate(record["spec"])
    if spec.base_path:
        spec = spec.model_copy(update={"base_path": str(folder / BASE_DIR)})
    store = JobStore(settings.jobs_dir / "jobs.db", on_event=lambda job_id: None)
    store.adopt(
        Job(
            id=job_id,
            state=JobState.RUNNING,
            spec=spec,
            created=record["created"],
            started=record["started"],
            attempts=int(record["attempt"]),
        )
    )
    store.on_event = RemoteRecorder(store)
    return settings, store, store.get(job_id)
