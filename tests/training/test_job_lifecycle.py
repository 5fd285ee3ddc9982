"""Cancel, hot swap, and surviving a kill -9 of the server mid-training."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fakes import alive, jsonl, sentiment_rows, wait_gone
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_finetune import FAST, upload, watch_to_end

from edgetune.client import free_port, wait_until_serving
from edgetune.training.jobstore import JobStore
from edgetune.training.spec import JobState
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

SLOW = pb.Hyperparameters(
    epochs=40, learning_rate=1e-3, batch_size=4, max_length=16, early_stopping_patience=40
)


async def wait_for_event(stub, job_id: str, text: str) -> None:
    async for event in stub.WatchJob(pb.WatchJobRequest(id=job_id), timeout=120):
        if text in event.message:
            return
    raise AssertionError(f"job ended without an event containing {text!r}")


@pytest.fixture
def finetuning(channel: aio.Channel) -> finetuning_pb2_grpc.FineTuningStub:
    return finetuning_pb2_grpc.FineTuningStub(channel)


async def test_cancel_stops_the_process_and_removes_partial_files(
    finetuning, tiny_bert, settings
) -> None:
    dataset = await upload(finetuning, jsonl(sentiment_rows(200)))
    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            model_name="cancel-me",
            hyperparameters=SLOW,
        )
    )
    await wait_for_event(finetuning, job.id, "epoch 1 validation")  # a checkpoint exists now
    store = JobStore(settings.jobs_dir / "jobs.db")
    pid = store.get(job.id).pid
    assert alive(pid) and (settings.jobs_dir / job.id / "checkpoints").is_dir()

    cancelled = await finetuning.CancelJob(pb.CancelJobRequest(id=job.id))
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    assert not alive(pid)
    assert not (settings.jobs_dir / job.id).exists()
    assert not (settings.models_dir / "cancel-me").exists()
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.CancelJob(pb.CancelJobRequest(id=job.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    events = await watch_to_end(finetuning, job.id)
    assert events[-1].state == pb.JOB_STATE_CANCELLED


@pytest.mark.settings(max_queued_jobs=1)
async def test_queued_jobs_wait_for_a_slot_and_can_be_cancelled(
    finetuning, tiny_bert, settings
) -> None:
    dataset = await upload(finetuning, jsonl(sentiment_rows(200)))
    request = dict(base_path=str(tiny_bert), dataset_id=dataset.id, hyperparameters=SLOW)
    first = await finetuning.CreateJob(
        pb.CreateJobRequest(task="text-classification", model_name="a", **request)
    )
    second = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task="text-classification", model_name="b", idempotency_key="b", **request
        )
    )
    assert second.state == pb.JOB_STATE_QUEUED  # one job at a time by default
    with pytest.raises(aio.AioRpcError) as full:  # and one waiting, with max_queued_jobs=1
        await finetuning.CreateJob(
            pb.CreateJobRequest(task="text-classification", model_name="c", **request)
        )
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "max_queued_jobs = 1" in full.value.details()
    again = await finetuning.CreateJob(  # a retry of a queued job is not a new one
        pb.CreateJobRequest(
            task="text-classification", model_name="b", idempotency_key="b", **request
        )
    )
    assert again.id == second.id
    cancelled = await finetuning.CancelJob(pb.CancelJobRequest(id=second.id))
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    page = await finetuning.ListJobs(pb.ListJobsRequest(page_size=1))
    assert [j.id for j in page.jobs] == [second.id] and page.next_page_token
    rest = await finetuning.ListJobs(
        pb.ListJobsRequest(page_size=1, page_token=page.next_page_token)
    )
    assert [j.id for j in rest.jobs] == [first.id] and not rest.next_page_token
    await finetuning.CancelJob(pb.CancelJobRequest(id=first.id))


async def test_graceful_shutdown_requeues_a_running_job(settings, plugins, tiny_bert) -> None:
    from edgetune.server.app import start_server as start_in_process

    running = await start_in_process(settings, plugins)
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        dataset = await upload(stub, jsonl(sentiment_rows(200)))
        job = await stub.CreateJob(
            pb.CreateJobRequest(
                task="text-classification",
                base_path=str(tiny_bert),
                dataset_id=dataset.id,
                model_name="later",
                hyperparameters=SLOW,
            )
        )
        await wait_for_event(stub, job.id, "epoch 1 validation")
    pid = JobStore(settings.jobs_dir / "jobs.db").get(job.id).pid
    await running.stop(1)
    assert not alive(pid)
    stored = JobStore(settings.jobs_dir / "jobs.db").get(job.id)
    assert stored.state == JobState.QUEUED and stored.attempts == 0
    assert (settings.jobs_dir / job.id / "checkpoints").is_dir()  # kept for the resume


async def test_hot_swap_drops_no_request(finetuning, channel, server) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(
        model="tiny", inputs=[ipb.Input(text="good fun"), ipb.Input(text="bad")]
    )
    assert (await stub.Classify(request)).version == "1"
    seen: list[list[str]] = [[] for _ in range(4)]
    stop = asyncio.Event()

    async def traffic(versions: list[str]) -> None:
        """Classify until this client has had three answers from the promoted version 2
        (or `stop`, should the job not promote); bounded, at most 200 000 calls."""
        for _ in range(200_000):
            if stop.is_set() or versions[-3:] == ["2"] * 3:
                return
            versions.append((await stub.Classify(request)).version)  # any failure raises

    workers = [asyncio.create_task(traffic(versions)) for versions in seen]
    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task="text-classification",
            base_model=pb.ModelRef(name="tiny"),
            examples=pb.Examples(examples=[pb.Example(**r) for r in sentiment_rows(40)]),
            model_name="tiny",
            auto_promote=True,
            hyperparameters=FAST,
        )
    )
    await watch_to_end(finetuning, job.id)
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    if not (final.state == pb.JOB_STATE_SUCCEEDED and final.result.promoted):
        stop.set()
    await asyncio.wait_for(asyncio.gather(*workers), 120)
    assert final.state == pb.JOB_STATE_SUCCEEDED and final.result.promoted, final.error
    for versions in seen:
        # Each client, once switched, never goes back. (Across clients a request that
        # started on version 1 may finish after another client's first version-2 answer:
        # in-flight requests finish on the old version, as they should.)
        assert versions[0] == "1" and versions[-1] == "2"
        assert versions == sorted(versions)
    assert (await stub.Classify(request)).version == "2"
    assert ("tiny", 1) not in server.registry.loaded  # the old version was unloaded
    health = health_pb2_grpc.HealthStub(channel)
    check = await health.Check(health_pb2.HealthCheckRequest(service="tiny:1"))
    assert check.status == health_pb2.HealthCheckResponse.NOT_SERVING


def start_server(home: Path, port: int, **env_vars: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(home),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EDGETUNE_TRAIN_THREADS": "1",
        **env_vars,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgetune", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_until_serving(f"127.0.0.1:{port}", timeout=60, process=proc)
    return proc


def test_kill_9_mid_training_then_restart_resumes_from_the_checkpoint(
    tmp_path, seeded_models, tiny_bert
):
    """A client in another process than the server; the server is SIGKILLed mid-training."""
    home = tmp_path / "home"
    shutil.copytree(seeded_models, home / "models")
    port = free_port()
    # Its training process stops once epoch 1 is recorded, so the kill lands mid-training
    # however fast the CPU (the restarted server runs without the fault).
    server = start_server(home, port, EDGETUNE_TEST_FAULT="pause@epoch")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            data = jsonl(sentiment_rows(200))
            dataset = stub.UploadDataset(
                iter(
                    [
                        pb.UploadDatasetRequest(
                            header=pb.DatasetHeader(task="text-classification", filename="d.jsonl")
                        ),
                        pb.UploadDatasetRequest(chunk=data),
                    ]
                )
            )
            hp = pb.Hyperparameters(epochs=3, learning_rate=1e-3, batch_size=4, max_length=16)
            job = stub.CreateJob(
                pb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    dataset_id=dataset.id,
                    model_name="survivor",
                    hyperparameters=hp,
                )
            )
            for event in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=120):
                if "test fault: paused at epoch" in event.message:
                    break
            else:
                raise AssertionError("the job ended before its first epoch was recorded")
        worker = JobStore(home / "jobs" / "jobs.db").get(job.id).pid
        server.send_signal(signal.SIGKILL)
        server.wait()
        assert wait_gone(worker), "the training process outlived its server"
        assert JobStore(home / "jobs" / "jobs.db").get(job.id).state == JobState.RUNNING

        server = start_server(home, port)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=180))
            final = stub.GetJob(pb.GetJobRequest(id=job.id))
        messages = [e.message for e in events]
        assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, messages)
        assert any("it resumes from the checkpoint of epoch" in m for m in messages), messages
        assert any("resuming after epoch" in m for m in messages), messages
        assert not any(
            "epoch 1 validation" in m
            for m in messages[
                messages.index(next(m for m in messages if "resuming after epoch" in m)) :
            ]
        ), "epoch 1 trained twice"
        assert final.result.version == "1"
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            reply = inference_pb2_grpc.InferenceStub(channel).Classify(
                ipb.ClassifyRequest(model="survivor", inputs=[ipb.Input(text="great fun")])
            )
        assert reply.version == "1"
        assert {s.label for s in reply.results[0].labels} == {"negative", "positive"}
    finally:
        server.kill()
        server.wait()
