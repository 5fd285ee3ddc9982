"""A cancel that races the publication of a job's version: before the rename nothing is
published and the job is cancelled; after it the job succeeds with its version (and says
the cancel came too late) — never CANCELLED with a version in the repository.

The training process stops at an exact point through `EDGETUNE_TEST_FAULT=pause@POINT`
(edgetune.training.faults); a cancel ends the pause.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fakes import sentiment_rows
from server_process import ServerProcess, check_repository, staging_leftovers, watch_until

from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc

HYPERPARAMETERS = fpb.Hyperparameters(epochs=1, learning_rate=3e-3, batch_size=8, max_length=16)


@pytest.fixture
def home(tmp_path: Path, seeded_models: Path) -> Path:
    shutil.copytree(seeded_models, tmp_path / "home" / "models")
    return tmp_path / "home"


@pytest.mark.parametrize("auto_promote", [True, False])
@pytest.mark.parametrize(
    ("point", "published"),
    [
        ("export", False),  # ONNX files in staging: the cancel wins
        ("publish", False),  # assembled, just before the rename: the cancel still wins
        ("published", True),  # renamed into place: too late, the job succeeds
    ],
)
def test_a_cancel_while_exporting_either_wins_before_the_rename_or_comes_too_late(
    home: Path, point: str, published: bool, auto_promote: bool
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
                    model_name="raced",
                    auto_promote=auto_promote,
                    hyperparameters=HYPERPARAMETERS,
                )
            )
            watch_until(channel, job.id, f"test fault: paused at {point}")
            stub.CancelJob(fpb.CancelJobRequest(id=job.id))
            events = list(stub.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=120))
            final = stub.GetJob(fpb.GetJobRequest(id=job.id))
            versions = ModelRepository(home / "models").versions("raced")
            messages = [e.message for e in events]
            if published:
                assert final.state == fpb.JOB_STATE_SUCCEEDED, (final.error, messages)
                assert "too late" in messages[-1]
                assert versions == [1] and final.result.version == "1"
                assert final.result.promoted == auto_promote
                assert list(check_repository(home, channel, "raced")) == [1]
            else:
                assert final.state == fpb.JOB_STATE_CANCELLED, (final.error, messages)
                assert versions == []
                assert not final.result.version
        assert staging_leftovers(home) == []
        assert not (home / "jobs" / job.id).exists()
    finally:
        server.stop()
