"""A full disk while a job publishes: the job fails cleanly, with an error that says so,
nothing is half-published, and the server keeps answering throughout.

No tmpfs or loop device without privileges: the test-only hook
`EDGETUNE_TEST_FAULT=fsize=BYTES@publish` (edgetune.training.faults) sets RLIMIT_FSIZE in
the training process for its export and publish step, so writing model.onnx (116 KiB for
the tiny model) fails the way a full disk would (EFBIG instead of ENOSPC).
"""

from __future__ import annotations

import asyncio

import grpc
from fakes import sentiment_rows, wait_gone
from server_process import check_repository, staging_leftovers

from edgetune.training.jobstore import JobStore
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb


async def test_a_full_disk_during_publish_fails_the_job_cleanly(
    server, channel, settings, monkeypatch
) -> None:
    monkeypatch.setenv(
        "EDGETUNE_TEST_FAULT", "fsize=65536@publish"
    )  # training processes inherit it
    inference = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
    answered: list[str] = []
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    job = await stub.CreateJob(
        fpb.CreateJobRequest(
            task="text-classification",
            base_model=fpb.ModelRef(name="tiny"),
            examples=fpb.Examples(examples=[fpb.Example(**r) for r in sentiment_rows(40)]),
            model_name="tiny",
            auto_promote=True,
            hyperparameters=fpb.Hyperparameters(
                epochs=1, learning_rate=3e-3, batch_size=8, max_length=16
            ),
        )
    )
    events = []
    async for event in stub.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=240):
        events.append(event)
        # A call at each step the job reports (training, exporting, the failed publish),
        # while its training process goes on: paced by the job, not by a clock.
        answered.append((await inference.Classify(request)).version)  # a failure raises
    final = await stub.GetJob(fpb.GetJobRequest(id=job.id))
    assert final.state == fpb.JOB_STATE_FAILED, [e.message for e in events]
    assert "out of disk space while publishing tiny (File too large)" in final.error
    assert "nothing was published" in final.error
    assert fpb.JOB_STATE_EXPORTING in [e.state for e in events]  # it failed while publishing
    # Nothing half-published: no new version, no staging folder, latest unchanged, and the
    # failed job's checkpoints are gone (they would only hold on to more space). The
    # training process removes them after it has recorded the failure, which ends the
    # watch: wait for it to exit (a separate process; wait_gone waits on its pidfd).
    worker = JobStore(settings.jobs_dir / "jobs.db").get(job.id).pid
    assert worker and await asyncio.to_thread(wait_gone, worker, 60)
    assert staging_leftovers(settings.home) == []
    assert not (settings.jobs_dir / job.id / "checkpoints").exists()
    assert await asyncio.to_thread(versions_that_verify_and_serve, server.port, settings.home) == [
        1
    ]
    # The server answered a call at every step while the job trained, exported and failed.
    assert len(answered) == len(events) and set(answered) == {"1"}
    assert (await inference.Classify(request)).version == "1"


def versions_that_verify_and_serve(port: int, home) -> list[int]:
    """check_repository from a thread: its blocking calls must not stall the server's loop."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return list(check_repository(home, channel, "tiny"))
