"""A property-based stateful test of the job lifecycle and the repository (hypothesis
`RuleBasedStateMachine`): random interleavings of uploads, job creation, cancels, kill -9
and restart of the server, alias moves and model loads on one home, with the invariants
checked after every step:

- no CANCELLED job has a version in the repository;
- no job is RUNNING or EXPORTING without a live training process;
- every version in the repository verifies (the sha256 of every file) and `latest` names
  one of them;
- the stored data sets hold no more than the quota;
- at rest (every job final), no partial upload and no staging folder is left.

Bounded in examples and steps so that CI stays well under its limit.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from pathlib import Path

import grpc
from fakes import alive, jsonl, sentiment_rows
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from server_process import ServerProcess, staging_leftovers, wait_gone

from edgetune.store import ModelRepository
from edgetune.store.manifest import Manifest
from edgetune.training.datasets import folder_bytes
from edgetune.training.jobstore import JobStore
from edgetune.training.results import find_published
from edgetune.training.spec import JobState
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, models_pb2_grpc
from edgetune.v1 import models_pb2 as mpb

QUOTA_BYTES = 6_000
HYPERPARAMETERS = fpb.Hyperparameters(epochs=1, learning_rate=3e-3, batch_size=8, max_length=16)
SEEDED: Path | None = None  # the seeded repository, set by the test below
STEPS: Counter[str] = Counter()  # rules run, so the test can show it exercised them


def expect(exc: grpc.RpcError, code: grpc.StatusCode) -> None:
    """A refusal a rule may meet (a full quota, a job that already ended), and no other."""
    if exc.code() != code:
        raise AssertionError(f"{exc.code()}: {exc.details()}, expected {code}")


class JobsAndRepository(RuleBasedStateMachine):
    """One server on one home, driven by hypothesis."""

    jobs = Bundle("jobs")

    @initialize()
    def start(self) -> None:
        assert SEEDED is not None
        self.tmp = Path(tempfile.mkdtemp(prefix="stateful-"))
        self.home = self.tmp / "home"
        shutil.copytree(SEEDED, self.home / "models")
        self.server = ServerProcess(
            self.home, EDGETUNE_DATASETS_QUOTA_MB=str(QUOTA_BYTES / 2**20)
        ).start()
        self.channel = self.server.channel()
        self.store = JobStore(self.home / "jobs" / "jobs.db")

    def _stubs(self) -> tuple[finetuning_pb2_grpc.FineTuningStub, models_pb2_grpc.ModelsStub]:
        return (
            finetuning_pb2_grpc.FineTuningStub(self.channel),
            models_pb2_grpc.ModelsStub(self.channel),
        )

    # -- rules ----------------------------------------------------------------------------

    @rule(rows=st.integers(min_value=8, max_value=120), seed=st.integers(0, 3))
    def upload(self, rows: int, seed: int) -> None:
        STEPS["upload"] += 1
        data = jsonl(sentiment_rows(rows, seed=seed))
        finetuning, _ = self._stubs()

        def messages():
            yield fpb.UploadDatasetRequest(
                header=fpb.DatasetHeader(task="text-classification", filename="t.jsonl")
            )
            for start in range(0, len(data), 1000):
                yield fpb.UploadDatasetRequest(chunk=data[start : start + 1000])

        try:
            finetuning.UploadDataset(messages(), timeout=60)
        except grpc.RpcError as exc:
            expect(exc, grpc.StatusCode.RESOURCE_EXHAUSTED)

    @rule(target=jobs, auto_promote=st.booleans(), rows=st.integers(16, 40))
    def create(self, auto_promote: bool, rows: int) -> str:
        STEPS["create"] += 1
        finetuning, _ = self._stubs()
        examples = [fpb.Example(**r) for r in sentiment_rows(rows, seed=rows)]
        try:
            job = finetuning.CreateJob(
                fpb.CreateJobRequest(
                    task="text-classification",
                    base_model=fpb.ModelRef(name="tiny"),
                    examples=fpb.Examples(examples=examples),
                    model_name="tiny",
                    auto_promote=auto_promote,
                    hyperparameters=HYPERPARAMETERS,
                ),
                timeout=60,
            )
        except grpc.RpcError as exc:  # the inline examples did not fit the quota
            expect(exc, grpc.StatusCode.RESOURCE_EXHAUSTED)
            return ""
        return str(job.id)

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        STEPS["cancel"] += 1
        if not job_id:
            return
        finetuning, _ = self._stubs()
        try:
            finetuning.CancelJob(fpb.CancelJobRequest(id=job_id), timeout=60)
        except grpc.RpcError as exc:
            expect(exc, grpc.StatusCode.FAILED_PRECONDITION)

    @rule()
    def restart(self) -> None:
        STEPS["restart"] += 1
        self.channel.close()
        workers = [j.pid for j in self.store.in_states([JobState.RUNNING, JobState.EXPORTING])]
        self.server.kill9()
        for pid in workers:
            assert wait_gone(pid), "a training process outlived its server"
        self.server.start()
        self.channel = self.server.channel()
        self.active_jobs_have_a_live_process()

    @precondition(lambda self: len(ModelRepository(self.home / "models").versions("tiny")) > 1)
    @rule(pick=st.integers(0, 10))
    def move_latest(self, pick: int) -> None:
        STEPS["move_latest"] += 1
        versions = ModelRepository(self.home / "models").versions("tiny")
        version = versions[pick % len(versions)]
        _, models = self._stubs()
        models.SetAlias(
            mpb.SetAliasRequest(name="tiny", alias="latest", version=str(version)), timeout=60
        )

    @rule()
    def load(self) -> None:
        STEPS["load"] += 1
        _, models = self._stubs()
        models.LoadModel(mpb.LoadModelRequest(name="tiny"), timeout=60)

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def no_cancelled_job_has_a_version(self) -> None:
        repository = ModelRepository(self.home / "models")
        for job in self.store.in_states([JobState.CANCELLED]):
            assert find_published(repository, "tiny", job.id) is None, job.id

    def active_jobs_have_a_live_process(self) -> None:
        """Checked right after a restart's recovery: no job is left RUNNING or EXPORTING
        for a process that died with the old server. (Between restarts a job may sit in
        those states for a moment after its process exited, until the server records the
        end or finishes the promotion.)"""
        for job in self.store.in_states([JobState.RUNNING, JobState.EXPORTING]):
            assert job.pid and (alive(job.pid) or job.result), (job.id, job.state, job.pid)

    @invariant()
    def every_version_verifies(self) -> None:
        repository = ModelRepository(self.home / "models")
        versions = repository.versions("tiny")
        for number in versions:
            folder = self.home / "models" / "tiny" / str(number)
            Manifest.read(folder).verify_files(folder)
        assert repository.resolve("tiny").version in versions

    @invariant()
    def the_quota_holds(self) -> None:
        stored = sum(folder_bytes(p) for p in (self.home / "datasets").glob("ds_*"))
        assert stored <= QUOTA_BYTES

    def teardown(self) -> None:
        try:
            finetuning, _ = self._stubs()
            for job in self.store.in_states(
                [JobState.VALIDATING, JobState.QUEUED, JobState.RUNNING, JobState.EXPORTING]
            ):
                for _ in finetuning.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=240):
                    pass
            # At rest: nothing half-written is left behind.
            assert staging_leftovers(self.home) == []
            incoming = self.home / "datasets" / ".incoming"
            assert not incoming.exists() or not any(incoming.iterdir())
            self.no_cancelled_job_has_a_version()
        finally:
            self.channel.close()
            self.server.stop()
            shutil.rmtree(self.tmp, ignore_errors=True)


def test_jobs_and_the_repository_keep_their_invariants(seeded_models: Path) -> None:
    global SEEDED
    SEEDED = seeded_models
    machine = JobsAndRepository.TestCase
    machine.settings = settings(
        max_examples=6,
        stateful_step_count=8,
        deadline=None,
        derandomize=True,  # the same interleavings on every run: CI is reproducible
        suppress_health_check=list(HealthCheck),
    )
    machine().runTest()
    # The interleavings included each kind of step that can break the invariants.
    assert {"upload", "create", "cancel", "restart"} <= set(STEPS), STEPS
