"""Dynamic batching: requests for one model that arrive together run as one ONNX Runtime call.

While a batch runs, new requests wait in a bounded queue; the next run takes everything
waiting, up to a size limit. An idle model adds no delay (unless `batch_max_delay_ms` asks
to wait for company), so latency at concurrency 1 is unchanged and throughput under load
comes from fuller batches instead of more threads fighting over the same cores.

A small batch taken when nothing else waits (`inline_max_inputs`, one input by default) runs
on the event-loop thread itself: the two thread hand-offs of the pool (loop -> worker ->
loop) cost about 0.3 ms, a tenth of a short MiniLM call, and a run that small delays other
calls by at most its own few milliseconds. Only after a run that was small itself, though:
under load the queue is empty for a moment after each batch (its callers have not sent
their next requests yet), and the first of them, run inline, would keep the loop from
taking in the rest: batches shrank to ones and twos and the loop spent a fifth of its time
in ONNX Runtime (py-spy at 32 callers, bench/latency.py). And only when the request came
well after the previous run ended (`BACKLOG_SHARE` of that run's time): a request that
arrives right behind a run was waiting while it ran, so others are coming. While an
inline run holds the loop no request can even reach the queue, so the queue alone cannot
tell; the arrival time can. At 8 callers the first request after an inline run arrived
0.36 ms (median) after it ended, at 1 caller 1.5 ms (one round trip to the client), for a
2.4 ms run; pooling those took 8 callers from 371-439 to 398-471 calls/s (k6 runs of
bench/latency.py's scenario, old and new code interleaved). The window grows with the run on
purpose: a lone caller's long run (a 128-token article, ~10 ms) falls inside it and goes to
the pool, where the hand-off is a few percent of the run (1 caller p50 11.8 and 12.7 ms
pooled against 11.7 and 12.6 inline), while running a backlog inline holds the loop for the
whole run; capping the window at 1 ms brought those runs back inline and took 8 callers
from 536/499 to 476/470 calls/s (`edgetune_inline_runs_total` counts the inline runs).

A model with a one-thread session (`ServedModel.parallel_runs` > 1, CPU) runs that many
batches at once, each on one core, as Triton runs several instances of a model: on two
cores two one-thread runs of fused int8 MiniLM did 2,260 short texts/s at batch 8 and
2,430 at batch 32, against 1,300 and 1,810 for one two-thread run at a time (in process).
The drain loop hands a batch to a free slot as soon as it has one, so batches stay small
while the cores keep up and grow when they do not. A batch taken while no other run is in
flight and nothing else waits runs "alone": it holds every slot, and may take the session
with a thread per core (a long input alone on the model is faster on two threads).

The models of one process share the cores (`Cores`): a batch is alone only when no run of
any model on the CPU is in flight, and all of them together run at most one batch per core
at once. Two models busy at the same time then run side by side on their one-thread
sessions instead of two thread-per-core runs fighting over the same cores: in process, two
fused int8 MiniLM sessions each driven by its own thread on two cores did 1,456-1,524 short
texts/s at batch 1 that way against 732-776 with a two-thread session each (1,810-1,940
against 1,245-1,272 at batch 8; one ONNX Runtime thread pool shared by both sessions,
`use_per_session_threads` off, did 905-938 and 1,259-1,345).

A request whose caller gave up while it waited (a cancelled call, an expired deadline: its
future is cancelled) is dropped when the queue is drained and never reaches the model.
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from edgetune.errors import EdgetuneError, ResourceExhausted
from edgetune.serving.observe import CURRENT_CALL, Timing
from edgetune.task import Input, Result

Run = Callable[[Sequence[Input], int, bool], tuple[list[Result], Timing]]
"""A model's batch call (inputs, top_k, alone): results and how long it took
(ServedModel.run); `alone` says no other run overlaps it."""

BACKLOG_SHARE = 0.25
"""A request that arrives within this share of the previous run's time after that run
ended is taken to have waited behind it (see the module docstring): it never runs inline."""


class Cores:
    """The runs in flight on the CPU, across the batchers of every model that shares it,
    against how many the cores take at once. A batcher waits while it is full and is woken
    when any run releases its share; the batcher that took slots last is woken last, so
    models busy at once take turns (the first woken takes the free core)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.busy = 0
        """Slots taken by runs in flight (a run alone takes all of them)."""
        self._watchers: weakref.WeakKeyDictionary[asyncio.Event, None] = weakref.WeakKeyDictionary()
        """Each batcher's wake-up event, in the order they are woken (kept only while its
        batcher is)."""

    @property
    def full(self) -> bool:
        """Whether no run may start now."""
        return self.busy >= self.capacity

    def watch(self, wake: asyncio.Event) -> None:
        """Set `wake` whenever a run releases its slots."""
        self._watchers[wake] = None

    def take(self, slots: int, wake: asyncio.Event) -> None:
        """Slots for a run of the batcher woken by `wake`, which goes to the back."""
        self.busy += slots
        self._watchers.pop(wake, None)
        self._watchers[wake] = None

    def release(self, slots: int) -> None:
        self.busy -= slots
        for wake in list(self._watchers):
            wake.set()


@dataclass(slots=True)
class _Pending:
    inputs: Sequence[Input]
    top_k: int
    future: asyncio.Future[tuple[list[Result], Timing]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    enqueued_ns: int = field(default_factory=time.time_ns)


@dataclass(slots=True)
class BatchStats:
    """Counters for metrics and tests."""

    runs: int = 0
    requests: int = 0
    inputs: int = 0
    inline_runs: int = 0
    dropped: int = 0
    """Requests dropped from the queue because their caller gave up before they ran."""


class Batcher:
    """One model's request queue and the loop that drains it in batches."""

    def __init__(
        self,
        name: str,
        run: Run,
        executor: Executor,
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        inline_max_inputs: int = 0,
        on_run: Callable[[Timing], None] | None = None,
        parallel_runs: int = 1,
        backlog_share: float = BACKLOG_SHARE,
        cores: Cores | None = None,
        run_threads: int = 0,
    ) -> None:
        """:param parallel_runs: runs of this model that may be in flight at once.
        :param cores: the budget this model's runs share with other models' (None: its own,
            of `parallel_runs` slots).
        :param run_threads: the cores a run alone keeps busy (its session's threads), of
            `cores`; 0: all of them. A model served on one thread takes one core, so two
            of them still run side by side."""
        self.name = name
        self.run = run
        self.on_run = on_run
        self.executor = executor
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.inline_max_inputs = inline_max_inputs
        self.parallel_runs = max(1, parallel_runs)
        self.backlog_share = backlog_share
        self.stats = BatchStats()
        self._busy = 0
        """Slots taken by runs in flight (a run alone takes all of them)."""
        self._queued_inputs = 0
        """Inputs of the requests in the queue."""
        self._wake = asyncio.Event()
        """Set when a request arrives or a run ends: what the drain loop waits for."""
        self.cores = cores if cores is not None else Cores(self.parallel_runs)
        self.cores.watch(self._wake)
        self.alone_slots = min(run_threads or self.cores.capacity, self.cores.capacity)
        """The budget's slots a run alone takes."""
        self._runs: set[asyncio.Task[None]] = set()
        self._last_inputs = 0
        """Inputs of the previous run: a large one means the model is under load."""
        self._last_end_ns = 0
        self._last_run_ns = 0
        """When the previous run ended (time.time_ns, back on the loop) and how long the
        model took (its Timing): a request arriving right behind it waited while it ran."""
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(max_queue)
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, inputs: Sequence[Input], top_k: int) -> list[Result]:
        """Results for inputs, computed in a batch with whatever else is waiting (its time
        goes into the call's record, when there is one)."""
        pending = _Pending(inputs, top_k)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise ResourceExhausted(
                f"model {self.name!r}: {self._queue.maxsize} requests are already waiting; "
                "retry later"
            ) from None
        self._queued_inputs += len(inputs)
        self._wake.set()
        if self._worker is None:
            self._worker = asyncio.create_task(self._drain())
        results, timing = await pending.future
        record = CURRENT_CALL.get()
        if record is not None:
            record.ran(len(inputs), pending.enqueued_ns, timing)
        return results

    @property
    def waiting(self) -> int:
        """Requests in the queue (including any whose callers gave up, until drained)."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """Whether the drain loop is alive (it ends when the queue is empty)."""
        return self._worker is not None

    async def idle(self) -> None:
        """Return once the drain loop has ended, so every request queued before this call
        has run or been dropped (at once when the loop is not running). Cancelling the wait
        leaves the loop running."""
        while self._worker is not None:
            await asyncio.shield(self._worker)

    async def _drain(self) -> None:
        carry: _Pending | None = None
        while True:
            if carry is None and self._queue.empty():
                if not self._busy:
                    break
                await self._woken()  # a request arrives, or a run ends
                continue
            if self._busy >= self.parallel_runs or self.cores.full:
                await self._woken()
                continue
            first = carry if carry is not None else self._take()
            if self._gave_up(first):
                carry = None
                continue
            batch = [first]
            carry = await self._fill(batch, self._share(first))
            batch = [pending for pending in batch if not self._gave_up(pending)]
            if not batch:
                continue
            alone = not self.cores.busy and carry is None and self._queue.empty()
            slots = self.parallel_runs if alone else 1
            shared = self.alone_slots if alone else 1
            self._busy += slots
            self.cores.take(shared, self._wake)
            run = asyncio.create_task(self._run(batch, alone=alone))
            self._runs.add(run)
            run.add_done_callback(functools.partial(self._release, slots=slots, shared=shared))
        # No await between the emptiness check and this line: a submit either saw this
        # worker running (and its item was drained) or sees None and starts a new one.
        self._worker = None

    def _take(self) -> _Pending:
        pending = self._queue.get_nowait()
        self._queued_inputs -= len(pending.inputs)
        return pending

    def _share(self, first: _Pending) -> int:
        """Most inputs for the batch starting with first: with several free slots, the
        waiting inputs are split between them (one batch a slot, run side by side) rather
        than all taken by one run that leaves the other cores idle."""
        free = min(self.parallel_runs - self._busy, self.cores.capacity - self.cores.busy)
        if free <= 1:
            return self.max_batch
        waiting = len(first.inputs) + self._queued_inputs
        return max(1, min(self.max_batch, -(-waiting // free)))

    async def _woken(self) -> None:
        self._wake.clear()
        await self._wake.wait()

    def _release(self, run: asyncio.Task[None], slots: int, shared: int) -> None:
        self._runs.discard(run)
        self._busy -= slots
        self.cores.release(shared)  # wakes this batcher and every other one sharing them

    async def _fill(self, batch: list[_Pending], limit: int) -> _Pending | None:
        """Add waiting requests up to `limit` inputs (a request that does not fit within
        max_batch is returned, to start the next batch)."""
        size = sum(len(p.inputs) for p in batch)
        deadline = asyncio.get_running_loop().time() + self.max_delay_s
        while size < limit:
            try:
                if self._queue.empty() and self.max_delay_s > 0:
                    remaining = deadline - asyncio.get_running_loop().time()
                    if remaining <= 0:
                        break
                    async with asyncio.timeout(remaining):
                        item = await self._queue.get()
                    self._queued_inputs -= len(item.inputs)
                else:
                    item = self._take()
            except (asyncio.QueueEmpty, TimeoutError):
                break
            if self._gave_up(item):
                continue
            if size + len(item.inputs) > self.max_batch:
                return item
            batch.append(item)
            size += len(item.inputs)
        return None

    def _quiet(self, batch: list[_Pending]) -> bool:
        """Whether the batch's requests arrived well after the previous run ended (none
        of them waited while it ran)."""
        behind = self._last_end_ns + self.backlog_share * self._last_run_ns
        return all(pending.enqueued_ns > behind for pending in batch)

    def _gave_up(self, pending: _Pending) -> bool:
        """Whether the caller stopped waiting (cancelled, deadline expired); counts a drop."""
        if pending.future.done():
            self.stats.dropped += 1
            return True
        return False

    async def _run(self, batch: list[_Pending], alone: bool) -> None:
        loop = asyncio.get_running_loop()
        inputs = [item for pending in batch for item in pending.inputs]
        self.stats.runs += 1
        self.stats.requests += len(batch)
        self.stats.inputs += len(inputs)
        try:
            small = len(inputs) <= self.inline_max_inputs
            after_small = self._last_inputs <= self.inline_max_inputs
            self._last_inputs = len(inputs)
            if small and after_small and alone and self._queue.empty() and self._quiet(batch):
                self.stats.inline_runs += 1
                results, timing = self.run(inputs, 0, True)
                timing.inline = True
            else:
                results, timing = await loop.run_in_executor(
                    self.executor, self.run, inputs, 0, alone
                )
            self._last_end_ns = time.time_ns()
            self._last_run_ns = timing.ended_ns - timing.started_ns
        except EdgetuneError as exc:
            if len(batch) == 1:
                _fail(batch[0], exc)
                return
            # An input error names its index in the combined batch: run each request alone
            # so every client gets the error (or the answer) for its own inputs.
            for pending in batch:
                await self._run([pending], alone)
            return
        except Exception as exc:
            for pending in batch:
                _fail(pending, exc)
            return
        if self.on_run is not None:
            self.on_run(timing)
        start = 0
        for pending in batch:
            mine = results[start : start + len(pending.inputs)]
            start += len(pending.inputs)
            if not pending.future.done():
                pending.future.set_result(([_top(r, pending.top_k) for r in mine], timing))


def _fail(pending: _Pending, exc: BaseException) -> None:
    """Fail one request (unless its caller already gave up)."""
    if not pending.future.done():
        pending.future.set_exception(exc)


def _top(result: Result, top_k: int) -> Result:
    """The result with only its top_k best labels (the task ranked them already)."""
    if not top_k or len(result.labels) <= top_k:
        return result
    return Result(labels=result.labels[:top_k], spans=result.spans)
