"""The dynamic batcher, with a fake model, and through gRPC with the tiny model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc import aio

from edgetune.errors import InvalidArgument, ResourceExhausted
from edgetune.serving.batcher import Batcher
from edgetune.serving.observe import Timing
from edgetune.task import Input, LabelScore, Result, Text
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc


class FakeModel:
    """Echoes each text as its label; records the batches it ran; can be made slow."""

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[int] = []
        self.delay = delay
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, inputs: Sequence[Input], top_k: int) -> list[Result]:
        self.gate.wait(5)
        time.sleep(self.delay)
        texts = [item.text for item in inputs if isinstance(item, Text)]
        self.batches.append(texts)
        self.threads.append(threading.get_ident())
        for index, text in enumerate(texts):
            if text == "bad":
                raise InvalidArgument(f"inputs[{index}].text is bad")
        return [Result([LabelScore(t, 0.9, True), LabelScore("other", 0.1)]) for t in texts]

    def run(self, inputs: Sequence[Input], top_k: int) -> tuple[list[Result], Timing]:
        started = time.time_ns()
        results = self.predict(inputs, top_k)
        return results, Timing(started, started, time.time_ns(), len(inputs))


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


def batcher(
    model: FakeModel, executor, max_batch: int = 8, delay: float = 0.0, queue: int = 64
) -> Batcher:
    return Batcher("fake:1", model.run, executor, max_batch, delay, queue)


async def test_requests_that_wait_together_run_together(executor) -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first run so the others queue up behind it
    b = batcher(model, executor)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(b.submit([Text(t)], 1)) for t in "bcdefgh"]
    await asyncio.sleep(0.05)
    model.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [a[0].labels[0].label for a in answers] == list("abcdefgh")
    assert [len(a[0].labels) for a in answers] == [2] + [1] * 7  # each request's own top_k
    assert model.batches == [["a"], list("bcdefgh")]
    assert (b.stats.runs, b.stats.requests, b.stats.inputs) == (2, 8, 8)


async def test_batches_respect_the_size_limit_and_keep_order(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = batcher(model, executor, max_batch=4)
    first = asyncio.ensure_future(b.submit([Text("0")], 0))
    await asyncio.sleep(0.05)
    rest = [asyncio.ensure_future(b.submit([Text(f"{i}a"), Text(f"{i}b")], 0)) for i in range(1, 4)]
    await asyncio.sleep(0.05)
    model.gate.set()
    answers = await asyncio.gather(first, *rest)
    assert [[r.labels[0].label for r in a] for a in answers[1:]] == [
        ["1a", "1b"],
        ["2a", "2b"],
        ["3a", "3b"],
    ]
    assert model.batches == [["0"], ["1a", "1b", "2a", "2b"], ["3a", "3b"]]


async def test_an_idle_model_runs_at_once_unless_asked_to_wait(executor) -> None:
    model = FakeModel()
    b = batcher(model, executor)
    await b.submit([Text("alone")], 0)
    assert model.batches == [["alone"]]
    # "y" arrives after "x" started waiting: only a batcher that waits for company puts
    # them in one run (the sleep is the arrival gap under test, well inside the 2 s wait).
    waiting = batcher(model, executor, delay=2.0)
    first = asyncio.ensure_future(waiting.submit([Text("x")], 0))
    await asyncio.sleep(0.05)
    assert not model.batches[1:]  # "x" is still waiting, not run alone
    together = await asyncio.gather(first, waiting.submit([Text("y")], 0))
    assert len(together) == 2 and model.batches[-1] == ["x", "y"]


async def test_a_small_batch_on_an_idle_model_runs_on_the_event_loop_thread(executor) -> None:
    model = FakeModel()
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, inline_max_inputs=1)
    loop_thread = threading.get_ident()
    await b.submit([Text("one")], 0)
    await b.submit([Text("two"), Text("inputs")], 0)
    assert model.threads[0] == loop_thread
    assert model.threads[1] != loop_thread  # over the inline limit: the pool runs it
    assert b.stats.inline_runs == 1

    # With requests waiting behind it, even a one-input run goes to the pool, so the loop
    # stays free to take in more.
    model = FakeModel()
    model.gate.clear()
    one_at_a_time = Batcher("fake:1", model.run, executor, 1, 0.0, 64, inline_max_inputs=1)
    held = asyncio.ensure_future(one_at_a_time.submit([Text("a"), Text("b")], 0))
    await asyncio.sleep(0.05)
    queued = [asyncio.ensure_future(one_at_a_time.submit([Text(t)], 0)) for t in "cd"]
    await asyncio.sleep(0)
    model.gate.set()
    await asyncio.gather(held, *queued)
    assert model.batches == [["a", "b"], ["c"], ["d"]]
    assert model.threads[1] != loop_thread  # "d" was waiting
    assert model.threads[2] == loop_thread  # nothing left behind "d"


async def test_an_input_error_reaches_only_its_request_with_its_own_index(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = batcher(model, executor)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await asyncio.sleep(0.05)
    good = asyncio.ensure_future(b.submit([Text("b")], 0))
    bad = asyncio.ensure_future(b.submit([Text("c"), Text("bad")], 0))
    await asyncio.sleep(0.05)
    model.gate.set()
    await first
    assert (await good)[0].labels[0].label == "b"
    with pytest.raises(InvalidArgument, match=r"inputs\[1\]\.text is bad"):
        await bad


async def test_a_full_queue_is_resource_exhausted(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = batcher(model, executor, queue=2)
    running = asyncio.ensure_future(b.submit([Text("a")], 0))
    await asyncio.sleep(0.05)  # taken off the queue, blocked in predict
    queued = [asyncio.ensure_future(b.submit([Text(t)], 0)) for t in "bc"]
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhausted, match="2 requests are already waiting"):
        await b.submit([Text("d")], 0)
    model.gate.set()
    await asyncio.gather(running, *queued)


async def test_concurrent_grpc_calls_share_onnx_runtime_runs(server, channel, settings) -> None:
    # The tiny model answers in microseconds: run in the pool, or each call would finish on
    # the loop before the next arrives and there would be nothing to share.
    settings.inline_max_inputs = 0
    stub = inference_pb2_grpc.InferenceStub(channel)
    texts = [f"the movie was {w}" for w in ("good", "bad", "great", "boring")] * 8
    alone = [
        await stub.Classify(pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text=t)]))
        for t in texts[:4]
    ]
    served = await server.registry.get("tiny")
    before = served.batcher.stats.runs
    replies = await asyncio.gather(
        *(stub.Classify(pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text=t)])) for t in texts)
    )
    runs = served.batcher.stats.runs - before
    assert runs < len(texts)  # 32 requests, fewer ORT calls
    for reply, single in zip(replies[:4], alone, strict=True):
        assert [(s.label, round(s.score, 5)) for s in reply.results[0].labels] == [
            (s.label, round(s.score, 5)) for s in single.results[0].labels
        ]


async def test_queue_overflow_over_grpc(settings, plugins) -> None:
    from edgetune.server.app import start_server

    settings.max_queue_size = 1
    settings.inline_max_inputs = 0  # the held run must block a pool thread, not the loop
    running = await start_server(settings, plugins)
    try:
        served = await running.registry.get("tiny")
        decode = served.runtime.decode
        gate, entered = threading.Event(), threading.Event()

        def held(*args):
            entered.set()
            gate.wait(5)
            return decode(*args)

        served.runtime.decode = held  # type: ignore[method-assign]
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            request = pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text="good")])
            first = asyncio.ensure_future(stub.Classify(request))
            await asyncio.to_thread(entered.wait, 5)  # taken off the queue, held in a run
            rest = [asyncio.ensure_future(stub.Classify(request)) for _ in range(3)]
            for _ in range(50):  # until one waits in the queue and two were refused
                if sum(c.done() for c in rest) == 2:
                    break
                await asyncio.sleep(0.05)
            gate.set()
            outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        codes = sorted(o.code().name if isinstance(o, aio.AioRpcError) else "OK" for o in outcomes)
        assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
        exhausted = next(o for o in outcomes if isinstance(o, aio.AioRpcError))
        assert exhausted.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "requests are already waiting" in exhausted.details()
    finally:
        await running.stop(0)
