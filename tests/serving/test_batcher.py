"""The dynamic batcher, with a fake model, and through gRPC with the tiny model."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from fakes import WatchedBatcher
from grpc import aio

from edgetune.errors import InvalidArgument, ResourceExhausted
from edgetune.serving.batcher import Batcher, Cores
from edgetune.serving.observe import Timing
from edgetune.task import Input, LabelScore, Result, Text
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc


class FakeModel:
    """Echoes each text as its label; records the batches it ran; holds each run while its
    gate is closed, and says when a run has started (`entered`)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: list[int] = []
        self.alone: list[bool] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.barrier: threading.Barrier | None = None
        """When set, each run waits there for the others: runs that do not overlap break it."""
        self.seconds = 0.0
        """How long each run takes (blocking, as ONNX Runtime does)."""
        self.during_run: Callable[[], None] | None = None
        """Called once inside the next run (on the thread that runs it)."""

    def predict(self, inputs: Sequence[Input], top_k: int) -> list[Result]:
        self.entered.set()
        if self.during_run is not None:
            self.during_run, during_run = None, self.during_run
            during_run()
        # The run's length is what the inline rule compares arrivals with: here time is the
        # signal under test, not a stand-in for waiting on an event.
        time.sleep(self.seconds)
        self.gate.wait(5)
        if self.barrier is not None:
            self.barrier.wait(10)
        texts = [item.text for item in inputs if isinstance(item, Text)]
        self.batches.append(texts)
        self.threads.append(threading.get_ident())
        for index, text in enumerate(texts):
            if text == "bad":
                raise InvalidArgument(f"inputs[{index}].text is bad")
        return [Result([LabelScore(t, 0.9, True), LabelScore("other", 0.1)]) for t in texts]

    def run(
        self, inputs: Sequence[Input], top_k: int, alone: bool = True
    ) -> tuple[list[Result], Timing]:
        self.alone.append(alone)
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


async def held_in_predict(model: FakeModel) -> None:
    """Wait (off the loop) until a run has been taken off the queue and is inside predict,
    held there by the model's closed gate."""
    assert await asyncio.to_thread(model.entered.wait, 10), "the model was never called"


async def run_ready_tasks() -> None:
    """One pass of the event loop: every task already scheduled runs to its next await.

    `submit` puts its request in the queue before its first await, so after one pass every
    submit started before it is queued (callers check `Batcher.waiting`). This orders
    tasks; it waits for no time: `asyncio.sleep(0)` is asyncio's yield to ready tasks."""
    await asyncio.sleep(0)


async def test_requests_that_wait_together_run_together(executor) -> None:
    model = FakeModel()
    model.gate.clear()  # hold the first run so the others queue up behind it
    b = batcher(model, executor)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await held_in_predict(model)
    rest = [asyncio.ensure_future(b.submit([Text(t)], 1)) for t in "bcdefgh"]
    await run_ready_tasks()
    assert b.waiting == 7
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
    await held_in_predict(model)
    rest = [asyncio.ensure_future(b.submit([Text(f"{i}a"), Text(f"{i}b")], 0)) for i in range(1, 4)]
    await run_ready_tasks()
    assert b.waiting == 3
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
    # "y" arrives after the drain loop took "x" off the queue: only a batcher that waits
    # for company puts them in one run; one that does not has started "x" alone by then.
    # (max_batch 2: the run starts as soon as "y" joins, so the long wait is never used up.)
    waiting = batcher(model, executor, max_batch=2, delay=60.0)
    first = asyncio.ensure_future(waiting.submit([Text("x")], 0))
    await run_ready_tasks()  # submit queues "x" and starts the drain loop
    await run_ready_tasks()  # the drain loop takes "x" off the queue
    assert waiting.waiting == 0 and waiting.running
    together = await asyncio.gather(first, waiting.submit([Text("y")], 0))
    assert len(together) == 2 and model.batches[1:] == [["x", "y"]]


async def test_a_small_batch_on_an_idle_model_runs_on_the_event_loop_thread(executor) -> None:
    model = FakeModel()
    # A caller in a loop with no round trip between calls looks like a backlog: no share.
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, inline_max_inputs=1, backlog_share=0)
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
    one_at_a_time = Batcher(
        "fake:1", model.run, executor, 1, 0.0, 64, inline_max_inputs=1, backlog_share=0
    )
    held = asyncio.ensure_future(one_at_a_time.submit([Text("a"), Text("b")], 0))
    await held_in_predict(model)
    queued = [asyncio.ensure_future(one_at_a_time.submit([Text(t)], 0)) for t in "cd"]
    await run_ready_tasks()
    assert one_at_a_time.waiting == 2
    model.gate.set()
    await asyncio.gather(held, *queued)
    assert model.batches == [["a", "b"], ["c"], ["d"]]
    assert model.threads[1] != loop_thread  # "d" was waiting
    assert model.threads[2] != loop_thread  # nothing behind "d", but it waited during a run
    await one_at_a_time.submit([Text("e")], 0)
    assert model.threads[3] == loop_thread  # sent after the last answer: the model is idle


async def test_after_a_large_batch_a_lone_small_request_still_runs_in_the_pool(executor) -> None:
    """Under load the queue empties for a moment after each batch: the first request of the
    next wave must not hold the event loop while the others arrive."""
    model = FakeModel()
    model.gate.clear()
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, inline_max_inputs=1, backlog_share=0)
    loop_thread = threading.get_ident()
    held = asyncio.ensure_future(b.submit([Text("a"), Text("b")], 0))  # two: the pool
    await held_in_predict(model)
    wave = [asyncio.ensure_future(b.submit([Text(t)], 0)) for t in "cde"]
    await run_ready_tasks()
    model.gate.set()
    await asyncio.gather(held, *wave)
    assert model.batches == [["a", "b"], ["c", "d", "e"]]
    await b.submit([Text("f")], 0)  # alone, but right after a batch of three
    await b.submit([Text("g")], 0)  # alone after a run of one: the model is idle
    assert model.batches[2:] == [["f"], ["g"]]
    assert model.threads[2] != loop_thread
    assert model.threads[3] == loop_thread
    assert b.stats.inline_runs == 1


async def test_a_request_that_arrived_during_an_inline_run_runs_in_the_pool(executor) -> None:
    """An inline run holds the loop, so a request sent meanwhile reaches the batcher only
    once it ends, to an empty queue: its arrival right behind the run says others are
    coming, and it must not hold the loop again (8 callers: 371-439 -> 398-471 calls/s)."""
    model = FakeModel()
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, inline_max_inputs=1)
    loop = asyncio.get_running_loop()
    loop_thread = threading.get_ident()
    behind: list[asyncio.Future[list[Result]]] = []
    # The request is sent while "a" runs: the loop takes it in when the run lets it go.
    model.during_run = lambda: loop.call_soon(
        lambda: behind.append(asyncio.ensure_future(b.submit([Text("b")], 0)))
    )
    model.seconds = 0.4  # "right behind" is within a quarter of it: room for a busy CPU
    await b.submit([Text("a")], 0)
    model.seconds = 0.0
    await run_ready_tasks()
    await behind[0]
    assert model.batches == [["a"], ["b"]]
    assert model.threads[0] == loop_thread  # idle model: inline
    assert model.threads[1] != loop_thread  # arrived right behind a run: the pool
    assert b.stats.inline_runs == 1


async def test_a_model_with_two_slots_runs_two_batches_at_once(executor) -> None:
    model = FakeModel()
    model.barrier = threading.Barrier(2)  # each run waits for the other: they must overlap
    b = Batcher("fake:1", model.run, executor, 1, 0.0, 64, parallel_runs=2)
    answers = await asyncio.gather(b.submit([Text("a")], 0), b.submit([Text("b")], 0))
    assert [a[0].labels[0].label for a in answers] == ["a", "b"]
    assert sorted(model.batches) == [["a"], ["b"]]
    assert len(set(model.threads)) == 2
    assert model.alone == [False, False]  # each ran beside the other, on one core


async def test_a_batch_alone_on_the_model_holds_every_slot(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, parallel_runs=2)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await held_in_predict(model)  # nothing else waited: "a" runs alone
    second = asyncio.ensure_future(b.submit([Text("b")], 0))
    await run_ready_tasks()
    await run_ready_tasks()  # the drain loop saw "b" and left it queued: no slot is free
    assert b.waiting == 1
    model.gate.set()
    await asyncio.gather(first, second)
    assert model.batches == [["a"], ["b"]]
    assert model.alone == [True, True]


def sharing(
    executor, cores: Cores, a_batch: int = 8, **options: int
) -> tuple[FakeModel, FakeModel, Batcher, Batcher]:
    """Two fake models whose batchers share `cores`; the first one's runs are held."""
    first, second = FakeModel(), FakeModel()
    first.gate.clear()
    a = Batcher("a:1", first.run, executor, a_batch, 0.0, 64, cores=cores, **options)
    b = Batcher("b:1", second.run, executor, 8, 0.0, 64, cores=cores, **options)
    return first, second, a, b


async def test_models_sharing_the_cores_wait_for_a_free_one(executor) -> None:
    # Two models on two cores: while the first runs two batches side by side, the second
    # model's request waits (it would be a third run on two cores), then runs.
    cores = Cores(2)
    first, second, a, b = sharing(executor, cores, a_batch=1, parallel_runs=2)
    a_calls = [asyncio.ensure_future(a.submit([Text(t)], 0)) for t in "xy"]
    await held_in_predict(first)
    b_call = asyncio.ensure_future(b.submit([Text("b")], 0))
    await run_ready_tasks()
    await run_ready_tasks()  # b's drain loop saw its request and found no free core
    assert cores.busy == 2 and b.waiting == 1 and not second.entered.is_set()
    first.gate.set()
    answers = await asyncio.gather(*a_calls, b_call)
    assert [answer[0].labels[0].label for answer in answers] == ["x", "y", "b"]
    assert first.alone == [False, False]  # two runs of the first model, one core each
    assert cores.busy == 0


async def test_a_run_alone_on_the_cores_holds_them_for_every_model(executor) -> None:
    cores = Cores(2)
    first, second, a, b = sharing(executor, cores, parallel_runs=2)
    held = asyncio.ensure_future(a.submit([Text("a")], 0))
    await held_in_predict(first)  # nothing else in flight anywhere: "a" runs alone
    assert first.alone == [True] and cores.busy == 2
    queued = asyncio.ensure_future(b.submit([Text("b")], 0))
    await run_ready_tasks()
    await run_ready_tasks()
    assert b.waiting == 1  # the other model does not start a thread-per-core run beside it
    first.gate.set()
    await asyncio.gather(held, queued)
    assert second.alone == [True]  # it ran once the cores were free, alone


async def test_two_models_served_on_one_thread_each_run_side_by_side(executor) -> None:
    first, second, a, b = sharing(executor, Cores(2), run_threads=1)
    first.gate.set()
    first.barrier = second.barrier = threading.Barrier(2)  # the runs must overlap
    answers = await asyncio.gather(a.submit([Text("a")], 0), b.submit([Text("b")], 0))
    assert [answer[0].labels[0].label for answer in answers] == ["a", "b"]
    assert first.alone == [True] and second.alone == [False]


async def test_models_waiting_for_the_cores_take_turns(executor) -> None:
    first, second, a, b = sharing(executor, Cores(1))
    second.gate.clear()
    calls = [asyncio.ensure_future(a.submit([Text("a1")], 0))]
    await held_in_predict(first)
    calls += [asyncio.ensure_future(a.submit([Text("a2")], 0))]
    calls += [asyncio.ensure_future(b.submit([Text("b1")], 0))]
    await run_ready_tasks()
    await run_ready_tasks()
    assert a.waiting == 1 and b.waiting == 1
    first.gate.set()
    # the core a1 leaves goes to the other model, which waited as long, not to a2
    await held_in_predict(second)
    assert a.waiting == 1
    second.gate.set()
    await asyncio.gather(*calls)
    assert first.batches == [["a1"], ["a2"]] and second.batches == [["b1"]]


async def test_requests_waiting_for_two_free_slots_are_split_between_them(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = Batcher("fake:1", model.run, executor, 8, 0.0, 64, parallel_runs=2)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await held_in_predict(model)  # "a" alone holds both slots; the next four wait
    rest = [asyncio.ensure_future(b.submit([Text(t)], 0)) for t in "bcde"]
    await run_ready_tasks()
    assert b.waiting == 4
    model.gate.set()
    await asyncio.gather(first, *rest)
    # Both slots free, four waiting: two runs of two side by side, not one run of four.
    assert model.batches[0] == ["a"] and sorted(model.batches[1:]) == [["b", "c"], ["d", "e"]]
    assert model.alone == [True, False, False]


async def test_an_input_error_reaches_only_its_request_with_its_own_index(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = batcher(model, executor)
    first = asyncio.ensure_future(b.submit([Text("a")], 0))
    await held_in_predict(model)
    good = asyncio.ensure_future(b.submit([Text("b")], 0))
    bad = asyncio.ensure_future(b.submit([Text("c"), Text("bad")], 0))
    await run_ready_tasks()
    assert b.waiting == 2  # "b" and "c, bad" will run as one batch
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
    await held_in_predict(model)  # taken off the queue, blocked in predict
    queued = [asyncio.ensure_future(b.submit([Text(t)], 0)) for t in "bc"]
    await run_ready_tasks()
    assert b.waiting == 2
    with pytest.raises(ResourceExhausted, match="2 requests are already waiting"):
        await b.submit([Text("d")], 0)
    model.gate.set()
    await asyncio.gather(running, *queued)


async def test_idle_returns_once_everything_queued_has_run(executor) -> None:
    model = FakeModel()
    model.gate.clear()
    b = batcher(model, executor, max_batch=1)
    calls = [asyncio.ensure_future(b.submit([Text(t)], 0)) for t in "abc"]
    await held_in_predict(model)
    idle = asyncio.ensure_future(b.idle())
    await run_ready_tasks()
    assert not idle.done() and b.running  # "a" is held; "b" and "c" wait behind it
    model.gate.set()
    await asyncio.wait_for(idle, 10)
    assert not b.running and model.batches == [["a"], ["b"], ["c"]]
    await asyncio.wait_for(b.idle(), 1)  # at once when the loop is not running
    await asyncio.gather(*calls)


def hold_runs(served: Any) -> tuple[threading.Event, threading.Event]:
    """Hold every run of a served model in its decode until `gate` opens; `entered` is set
    once a run is there."""
    decode = served.runtime.decode
    gate, entered = threading.Event(), threading.Event()

    def held(*args):
        entered.set()
        gate.wait(30)
        return decode(*args)

    served.runtime.decode = held
    return gate, entered


async def test_concurrent_grpc_calls_share_onnx_runtime_runs(settings, plugins) -> None:
    from edgetune.server.app import start_server

    # The tiny model answers in microseconds: hold its first run so that the other calls
    # queue behind it (in the pool, not on the loop, which must stay free to take them in).
    settings = settings.replace(inline_max_inputs=0)
    settings = settings.replace(batch_max_size=32)
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            texts = [f"the movie was {w}" for w in ("good", "bad", "great", "boring")] * 8

            def classify(text: str):
                return stub.Classify(pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text=text)]))

            alone = [await classify(t) for t in texts[:4]]
            served = await running.registry.get("tiny")
            assert served.batcher is not None
            watch = WatchedBatcher(served.batcher)
            gate, entered = hold_runs(served)
            before = served.batcher.stats.runs
            # The first call alone, held in its run; then the rest, which must queue (sent
            # together, two calls could reach the first batch on a busy machine).
            calls = [asyncio.ensure_future(classify(texts[0]))]
            assert await asyncio.to_thread(entered.wait, 30)  # one call's run is held
            calls += [asyncio.ensure_future(classify(t)) for t in texts[1:]]
            await watch.until(lambda: watch.submitted == len(texts), "took in every call")
            assert served.batcher.waiting == len(texts) - 1
            gate.set()
            replies = await asyncio.gather(*calls)
        # 32 requests: the held run, then the 31 that waited, in one run a free slot (a
        # model whose runs go side by side splits them: 16, then 15 into the one left).
        assert served.batcher.stats.runs - before == 1 + served.parallel_runs
        for reply, single in zip(replies[:4], alone, strict=True):
            assert [(s.label, round(s.score, 5)) for s in reply.results[0].labels] == [
                (s.label, round(s.score, 5)) for s in single.results[0].labels
            ]
    finally:
        await running.stop(0)


async def test_a_call_that_fills_a_batch_waits_its_turn_for_the_cores(settings, plugins) -> None:
    from edgetune.server.app import start_server

    running = await start_server(settings.replace(inline_max_inputs=0, batch_max_size=4), plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)

            def classify(*texts: str):
                inputs = [pb.Input(text=text) for text in texts]
                return stub.Classify(pb.ClassifyRequest(model="tiny", inputs=inputs))

            await classify("warm")
            served = await running.registry.get("tiny")
            assert served.batcher is not None
            watch = WatchedBatcher(served.batcher)
            gate, entered = hold_runs(served)
            first = asyncio.ensure_future(classify("the movie was good"))
            assert await asyncio.to_thread(entered.wait, 30)  # its run holds the cores
            large = asyncio.ensure_future(classify("good", "bad", "great", "boring"))
            await watch.until(lambda: watch.submitted == 2, "took in the call of four")
            # a full batch by itself, but it waits for the cores like any other call
            assert served.batcher.waiting == 1
            gate.set()
            replies = await asyncio.gather(first, large)
        assert [len(reply.results) for reply in replies] == [1, 4]
    finally:
        await running.stop(0)


async def test_queue_overflow_over_grpc(settings, plugins) -> None:
    from edgetune.server.app import start_server

    settings = settings.replace(max_queue_size=1)
    settings = settings.replace(
        inline_max_inputs=0
    )  # the held run must block a pool thread, not the loop
    running = await start_server(settings, plugins)
    try:
        served = await running.registry.get("tiny")
        gate, entered = hold_runs(served)
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            request = pb.ClassifyRequest(model="tiny", inputs=[pb.Input(text="good")])
            first = asyncio.ensure_future(stub.Classify(request))
            assert await asyncio.to_thread(entered.wait, 30)  # off the queue, held in a run
            rest = [asyncio.ensure_future(stub.Classify(request)) for _ in range(3)]
            # Two are refused (their calls end); one waits in the queue behind the held run.
            refused = await done_calls(rest, 2)
            assert all(isinstance(c.exception(), aio.AioRpcError) for c in refused), "answered"
            assert served.batcher is not None and served.batcher.waiting == 1
            gate.set()
            outcomes = await asyncio.gather(first, *rest, return_exceptions=True)
        codes = sorted(o.code().name if isinstance(o, aio.AioRpcError) else "OK" for o in outcomes)
        assert codes == ["OK", "OK", "RESOURCE_EXHAUSTED", "RESOURCE_EXHAUSTED"]
        exhausted = next(o for o in outcomes if isinstance(o, aio.AioRpcError))
        assert exhausted.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "requests are already waiting" in exhausted.details()
    finally:
        await running.stop(0)


async def done_calls(calls: list[asyncio.Future], count: int) -> set[asyncio.Future]:
    """The first `count` of calls to end (TimeoutError after 30 s if fewer do)."""
    done: set[asyncio.Future] = set()
    async with asyncio.timeout(30):
        while len(done) < count:
            ended, _ = await asyncio.wait(
                [c for c in calls if c not in done], return_when=asyncio.FIRST_COMPLETED
            )
            done |= ended
    return done
