"""Calls that end early: an expired deadline or a cancel while queued never reaches the
model; a client that drops a stream leaves nothing behind; SIGTERM under load drains."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fakes import WatchedBatcher, jsonl, sentiment_rows
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from edgetune.client import free_port, wait_until_serving
from edgetune.server.app import RunningServer
from edgetune.serving.model import ServedModel
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as pb


class GatedSession:
    """Wraps a loaded model's ONNX Runtime session: records the batch size of every run
    and holds each run until the gate opens, so later requests queue in the batcher."""

    def __init__(self, session, like: GatedSession | None = None) -> None:
        self.session = session
        self.gate = like.gate if like else threading.Event()
        self.started = like.started if like else threading.Event()
        self.batches: list[int] = like.batches if like else []

    def run(self, outputs, feeds):
        self.started.set()
        self.gate.wait(30)
        self.batches.append(len(next(iter(feeds.values()))))
        return self.session.run(outputs, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def request(*texts: str) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text=t) for t in texts])


async def gated_model(
    server: RunningServer, stub
) -> tuple[ServedModel, GatedSession, WatchedBatcher]:
    """Load the tiny model through a call (which makes its batcher), then hold its session
    behind a gate and watch its batcher."""
    await stub.Classify(request("warm"))
    served = server.registry.loaded[("tiny", 1)]
    gated = GatedSession(served.session)
    served.session = gated
    if served.small_session is not None:  # its one-thread session, behind the same gate
        served.small_session = GatedSession(served.small_session, like=gated)
    assert served.batcher is not None
    return served, gated, WatchedBatcher(served.batcher)


async def hold_the_model(stub, gated: GatedSession) -> asyncio.Task:
    """A two-input call (it runs in the pool, not inline) that blocks the model."""
    first = asyncio.ensure_future(stub.Classify(request("good fun", "bad plot")))
    await asyncio.to_thread(gated.started.wait, 10)
    return first


async def test_a_call_whose_deadline_expires_while_queued_never_runs(server, channel) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    served, gated, watch = await gated_model(server, stub)
    first = await hold_the_model(stub, gated)
    queued = asyncio.ensure_future(stub.Classify(request("queued", "behind", "it"), timeout=1))
    await watch.until(lambda: watch.submitted == 2, "queued the call")
    with pytest.raises(aio.AioRpcError) as caught:
        await queued  # the model is held: the deadline expires while the call is queued
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert served.batcher is not None and served.batcher.waiting == 1  # still in the queue
    await watch.until(lambda: watch.gave_up == 1, "cancelled the expired call")
    gated.gate.set()
    assert len((await first).results) == 2
    after = await stub.Classify(request("one"))
    assert len(after.results) == 1
    # The held call ran (2 inputs), then the next one (1); the 3-input call never did.
    assert gated.batches == [2, 1]
    assert served.batcher.stats.dropped == 1
    assert served.batcher.waiting == 0


async def test_a_call_cancelled_while_queued_never_runs(server, channel) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    served, gated, watch = await gated_model(server, stub)
    first = await hold_the_model(stub, gated)
    queued = stub.Classify(request("queued", "behind", "it"))
    await watch.until(lambda: watch.submitted == 2, "queued the call")
    assert served.batcher is not None and served.batcher.waiting == 1
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await watch.until(lambda: watch.gave_up == 1, "cancelled the call's handler")
    gated.gate.set()
    await first
    await stub.Classify(request("one"))
    assert gated.batches == [2, 1]
    assert served.batcher.stats.dropped == 1


def settle_counts() -> tuple[int, int]:
    """(asyncio tasks, threads) of this process, which runs the in-process server."""
    return len(asyncio.all_tasks()), threading.active_count()


async def wait_for_counts(baseline: tuple[int, int]) -> tuple[int, int]:
    """The counts once they are back at the baseline (or after 5 s, whatever they are).

    A poll with a deadline, not a stand-in for an event: what it waits for is the absence
    of leftovers. Every server-side step the test drives is awaited before this (handlers
    cancelled, batcher idle); the per-call tasks and threads of gRPC's own machinery then
    wind down on their own schedule and signal nothing, and a leak is counts that never
    come back."""
    for _ in range(100):
        counts = settle_counts()
        if counts[0] <= baseline[0] and counts[1] <= baseline[1]:
            return counts
        await asyncio.sleep(0.05)  # a poll with a deadline, for an absence: see above
    return settle_counts()


async def fill_the_pool(server: RunningServer) -> None:
    """Start every thread of the inference pool (it starts them one by one, as runs overlap:
    a model that runs batches side by side grows it to its size on its own schedule)."""
    workers = server.executor._max_workers  # type: ignore[attr-defined]
    all_started = threading.Barrier(workers)
    loop = asyncio.get_running_loop()
    await asyncio.gather(
        *(loop.run_in_executor(server.executor, all_started.wait, 10) for _ in range(workers))
    )


async def drop_classify_streams(
    stub, served: ServedModel, gated: GatedSession, watch: WatchedBatcher
) -> None:
    """Each stream gets one answer, then sends a request that is still running (the first
    stream's) or queued (the others') when all of them hang up."""
    streams = [stub.ClassifyStream() for _ in range(5)]
    for index, call in enumerate(streams):
        await call.write(pb.ClassifyStreamRequest(id=f"{index}", request=request("good")))
        answer = await call.read()
        assert answer.id == f"{index}" and answer.WhichOneof("outcome") == "response"
    gated.gate.clear()
    gated.started.clear()
    submitted, gave_up = watch.submitted, watch.gave_up
    for index, call in enumerate(streams):
        await call.write(pb.ClassifyStreamRequest(id=f"{index}b", request=request("a", "b")))
        if index == 0:
            assert await asyncio.to_thread(gated.started.wait, 10)
    await watch.until(lambda: watch.submitted == submitted + len(streams), "queued them all")
    batcher = served.batcher
    assert batcher is not None and batcher.waiting == len(streams) - 1
    for call in streams:
        call.cancel()
    # Every handler is cancelled: the four queued ones, and the one whose run is held.
    await watch.until(
        lambda: watch.gave_up == gave_up + len(streams), "cancelled every stream's handler"
    )
    gated.gate.set()
    await asyncio.wait_for(batcher.idle(), 30)  # the held run ended, the queue is drained


async def test_a_client_that_drops_classify_stream_leaves_nothing_behind(server, channel) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    served, gated, watch = await gated_model(server, stub)
    gated.gate.set()
    await drop_classify_streams(stub, served, gated, watch)  # pools reach their steady state
    await fill_the_pool(server)
    baseline = await wait_for_counts((10**6, 10**6))
    runs, dropped = len(gated.batches), served.batcher.stats.dropped
    for _ in range(5):
        await drop_classify_streams(stub, served, gated, watch)
    after = await wait_for_counts(baseline)
    assert served.batcher.waiting == 0 and not served.batcher.running
    # Per round the running request finished and the four queued ones were dropped unrun.
    assert served.batcher.stats.dropped - dropped == 5 * 4
    assert len(gated.batches) - runs == 5 * (1 + 5)  # 5 first answers + the one held run
    assert after == baseline, [t.get_coro() for t in asyncio.all_tasks()]


@pytest.mark.settings(max_concurrent_jobs=0)  # the job stays queued: no training process
async def test_a_client_that_drops_watch_job_leaves_nothing_behind(
    server, channel, tiny_bert
) -> None:
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    dataset = await upload(stub, jsonl(sentiment_rows(20)))
    job = await stub.CreateJob(
        fpb.CreateJobRequest(
            task="text-classification",
            base_path=str(tiny_bert),
            dataset_id=dataset.id,
            model_name="watched",
        )
    )
    assert job.state == fpb.JOB_STATE_QUEUED

    async def watch_and_hang_up() -> None:
        call = stub.WatchJob(fpb.WatchJobRequest(id=job.id))
        await call.read()
        await call.read()
        # Hang up while the server's handler waits for the job's next event.
        await server.jobs.signals.until_waiting(job.id)
        call.cancel()

    await watch_and_hang_up()
    baseline = await wait_for_counts((10**6, 10**6))
    for _ in range(10):
        await watch_and_hang_up()
    after = await wait_for_counts(baseline)
    assert after == baseline, [t.get_coro() for t in asyncio.all_tasks()]
    # every hung-up watch stops waiting (gRPC cancels its handler soon after the hang-up)
    await asyncio.wait_for(server.jobs.signals.until_waiting(job.id, 0), 10)


async def upload(stub, data: bytes) -> fpb.Dataset:
    async def messages():
        yield fpb.UploadDatasetRequest(
            header=fpb.DatasetHeader(task="text-classification", filename="d.jsonl")
        )
        yield fpb.UploadDatasetRequest(chunk=data)

    return await stub.UploadDataset(messages())


@pytest.fixture
def served_home(tmp_path: Path, seeded_models: Path) -> Path:
    import shutil

    shutil.copytree(seeded_models, tmp_path / "home" / "models")
    return tmp_path / "home"


@pytest.fixture
def serve_process(served_home: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`edgetune serve` in a child process, with a grace long enough not to cut a call."""
    port = free_port()
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(served_home),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EDGETUNE_SHUTDOWN_GRACE_S": "60",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "edgetune", "serve", "--port", str(port), "--log-level", "WARNING"],
        env=env,
    )
    address = f"127.0.0.1:{port}"
    try:
        wait_until_serving(address, timeout=60, process=process)
        yield process, address
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()


async def test_sigterm_under_load_drains_in_flight_calls_and_reports_not_serving_first(
    serve_process,
) -> None:
    process, address = serve_process
    async with aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        await stub.Classify(request("warm"))
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        not_serving = asyncio.Event()
        answered_after: list[int] = [0] * 8
        started = [asyncio.Event() for _ in answered_after]

        async def stream(index: int) -> grpc.StatusCode:
            """Classify in a loop until the server says NOT_SERVING and this stream has
            had answers after that; then hang up politely and read the final status."""
            call = stub.ClassifyStream()
            sent = 0
            while answered_after[index] < 3:
                await call.write(pb.ClassifyStreamRequest(id=str(sent), request=request("good")))
                answer = await call.read()
                assert answer.id == str(sent) and answer.WhichOneof("outcome") == "response"
                sent += 1
                started[index].set()
                if not_serving.is_set():
                    answered_after[index] += 1
            await call.done_writing()
            assert await call.read() == aio.EOF
            return await call.code()

        streams = [asyncio.ensure_future(stream(i)) for i in range(len(answered_after))]
        await asyncio.gather(*(event.wait() for event in started))
        process.send_signal(signal.SIGTERM)
        answer = await watch.read()
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
        not_serving.set()
        watch.cancel()  # a watch would hold the drain open until the grace ends
        codes = await asyncio.wait_for(asyncio.gather(*streams), 60)
    # Every call that was running when the signal came finished, and kept being answered
    # after health had turned NOT_SERVING.
    assert codes == [grpc.StatusCode.OK] * len(answered_after)
    assert answered_after == [3] * len(answered_after)
    assert await asyncio.to_thread(process.wait, 60) == 0
    with grpc.insecure_channel(address) as sync_channel, pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(sync_channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the port is closed
