"""Wake-ups for the coroutines that wait on a job (WatchJob, CancelJob), so they read the
job store when an event was written instead of polling it.

Two writers append a job's events: the server itself (its JobStore calls `notify`), and the
job's training process, a separate process with its own SQLite connection. The manager
gives that process the write end of a pipe (`EDGETUNE_JOB_EVENTS_FD`, see
`training/jobstore.py`); it writes one line per committed event, and the read end, watched
by the event loop, notifies the job's waiters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator


class JobSignals:
    """Per job, the asyncio events of the coroutines waiting for its next event.

    `notify` may be called from any thread (the job store runs in threads); the waiters'
    events are set on the loop they were made on.
    """

    def __init__(self) -> None:
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._pipes: dict[str, int] = {}  # job -> read end of its training process's pipe
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parked: dict[str, int] = {}  # job -> coroutines waiting in `wait` now
        self._parked_changed = asyncio.Event()

    @contextlib.contextmanager
    def waiter(self, job_id: str) -> Iterator[asyncio.Event]:
        """An asyncio.Event set at each event of job_id: clear it before reading the
        store, so an event written after the read still wakes the waiter."""
        self._loop = asyncio.get_running_loop()
        event = asyncio.Event()
        self._waiters.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            waiting = self._waiters.get(job_id, set())
            waiting.discard(event)
            if not waiting:
                self._waiters.pop(job_id, None)

    async def wait(self, job_id: str, event: asyncio.Event, seconds: float) -> None:
        """Until event (a waiter of job_id) is set or `seconds` have passed."""
        self._parked[job_id] = self._parked.get(job_id, 0) + 1
        self._parked_changed.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), seconds)
        finally:
            self._parked[job_id] -= 1
            if not self._parked[job_id]:
                del self._parked[job_id]
            self._parked_changed.set()

    def waiting(self, job_id: str) -> int:
        """How many coroutines (watches, cancels) wait for job_id's next event now."""
        return self._parked.get(job_id, 0)

    async def until_waiting(self, job_id: str, count: int = 1) -> None:
        """Return once at least `count` coroutines wait for job_id's next event (0: once
        none does, e.g. after every watcher hung up)."""
        while (self.waiting(job_id) < count) if count else self.waiting(job_id):
            self._parked_changed.clear()
            await self._parked_changed.wait()

    def notify(self, job_id: str) -> None:
        """An event of job_id was committed (from any thread)."""
        loop = self._loop
        if loop is None:
            return  # nobody has waited yet
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._set(job_id)
        else:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
                loop.call_soon_threadsafe(self._set, job_id)

    def _set(self, job_id: str) -> None:
        for event in self._waiters.get(job_id, ()):
            event.set()

    # -- the pipe from a training process -------------------------------------------------

    def open_pipe(self, job_id: str) -> int:
        """A pipe for job_id's training process: returns the write end to pass to it (close
        it here once the process has started); the loop reads the other end."""
        self._loop = loop = asyncio.get_running_loop()
        self.close_pipe(job_id)  # a previous attempt's, should its EOF not have come yet
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        self._pipes[job_id] = read_end
        loop.add_reader(read_end, self._on_readable, job_id, read_end)
        return write_end

    def close_pipe(self, job_id: str) -> None:
        """Stop reading job_id's pipe (its process has exited) and wake its waiters for
        whatever it wrote last."""
        read_end = self._pipes.pop(job_id, None)
        if read_end is None:
            return
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(read_end)
        os.close(read_end)
        self.notify(job_id)

    def close(self) -> None:
        """Stop reading every pipe."""
        for job_id in list(self._pipes):
            self.close_pipe(job_id)

    def _on_readable(self, job_id: str, read_end: int) -> None:
        try:
            data = os.read(read_end, 4096)  # any number of lines: one wake-up covers them
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self._set(job_id)
        elif self._pipes.get(job_id) == read_end:  # EOF: the process and its pipe are gone
            self.close_pipe(job_id)
