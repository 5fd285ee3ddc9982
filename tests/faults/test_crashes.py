"""kill -9 of the server while a job exports and while it publishes, then a restart on the
same home: the job is resumed (never left running), no staging folder is left, every
version verifies and serves, `latest` names a complete version, and the job's version is
published exactly once.

(kill -9 mid-training is tests/training/test_job_lifecycle.py.) The training process
stops at an exact point through the test-only `EDGETUNE_TEST_FAULT=pause@POINT` hook
(edgetune.training.faults); the restarted server runs without it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fakes import sentiment_rows
from server_process import ServerProcess, alive, check_repository, staging_leftovers, wait_gone
from server_process import watch_until as watch_events

from edgetune.training.jobstore import JobStore
from edgetune.training.spec import JobState
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

HYPERPARAMETERS = fpb.Hyperparameters(epochs=1, learning_rate=3e-3, batch_size=8, max_length=16)


@pytest.fixture
def home(tmp_path: Path, seeded_models: Path) -> Path:
    shutil.copytree(seeded_models, tmp_path / "home" / "models")
    return tmp_path / "home"


@pytest.mark.parametrize(
    ("point", "what_is_on_disk"),
    [
        ("export", "staging"),  # ONNX files written to staging, nothing published
        ("publish", "staging"),  # version assembled in staging, just before the rename
        ("published", "version"),  # renamed into place, not yet recorded by the job
    ],
)
def test_kill_9_while_exporting_or_publishing_then_restart(
    home: Path, point: str, what_is_on_disk: str
) -> None:
    server = ServerProcess(home).start(EDGETUNE_TEST_FAULT=f"pause@{point}")
    try:
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            job = stub.CreateJob(
                fpb.CreateJobRequest(
                    task="text-classification",
                    base_model=fpb.ModelRef(name="tiny"),
                    examples=fpb.Examples(
                        examples=[fpb.Example(**row) for row in sentiment_rows(40)]
                    ),
                    model_name="tiny",
                    auto_promote=True,
                    hyperparameters=HYPERPARAMETERS,
                )
            )
            watch_events(channel, job.id, f"test fault: paused at {point}")
        store = JobStore(home / "jobs" / "jobs.db")
        worker = store.get(job.id).pid
        assert alive(worker)
        server.kill9()
        assert wait_gone(worker), "the training process outlived its server"
        interrupted = store.get(job.id)
        assert interrupted.state == JobState.EXPORTING  # what a crash leaves in the store
        if what_is_on_disk == "staging":
            folder = next(n for n in staging_leftovers(home) if not n.endswith(".lock"))
            assert staging_leftovers(home) == [folder, f"{folder}.lock"]
            assert (home / "models" / "tiny").is_dir()
            assert [p.name for p in (home / "models" / "tiny").iterdir() if p.name.isdigit()] == [
                "1"
            ]
        else:
            assert staging_leftovers(home) == []
            assert (home / "models" / "tiny" / "2" / "manifest.json").is_file()

        server.start()
        assert staging_leftovers(home) == []  # removed before any job runs again
        recovered = store.get(job.id)
        assert recovered.state != JobState.EXPORTING or alive(recovered.pid)
        assert recovered.pid != worker
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            events = list(stub.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=240))
            final = stub.GetJob(fpb.GetJobRequest(id=job.id))
            messages = [e.message for e in events]
            assert final.state == fpb.JOB_STATE_SUCCEEDED, (final.error, messages)
            # The job's version exists once: the restart did not publish a second copy.
            assert list(check_repository(home, channel, "tiny")) == [1, 2]
            assert final.result.version == "2" and final.result.promoted
            assert any("it resumes from the checkpoint of epoch 1" in m for m in messages)
            if what_is_on_disk == "version":
                assert any("recording it instead of training again" in m for m in messages)
            reply = inference_pb2_grpc.InferenceStub(channel).Classify(
                ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
            )
            assert reply.version == "2"  # latest was moved to the complete new version
        assert (home / "models" / "tiny" / "aliases" / "latest").read_text().strip() == "2"
        assert staging_leftovers(home) == []
        assert not (home / "jobs" / job.id).exists()  # checkpoints removed once published
        assert not alive(store.get(job.id).pid)
        assert store.in_states([JobState.RUNNING, JobState.EXPORTING]) == []
    finally:
        server.stop()
