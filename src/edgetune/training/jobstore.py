"""The job store: jobs, their events and checkpoints as rows in SQLite (WAL).

The server and each training process open their own connection; WAL lets them write
while the server reads. State changes are conditional updates, so a cancel and a finishing
worker cannot both win, and every change appends an event in the same transaction.

After each committed event the store calls `on_event(job_id)`, so the server can wake the
watchers of a job instead of polling the database: the server's store gets the job
manager's callback, and a training process started with `EDGETUNE_JOB_EVENTS_FD` writes a
line to that pipe, which the manager reads (see `training/signals.py`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgetune.errors import InvalidArgument, NotFound, ResourceExhausted, quoted
from edgetune.store.manifest import utc_now
from edgetune.training.spec import FINAL_STATES, JobSpec, JobState

MAX_JOB_ID = 64
MAX_SEQUENCE = 2**63 - 1
"""SQLite's largest integer: an event sequence never passes it."""
EVENTS_FD = "EDGETUNE_JOB_EVENTS_FD"
"""Set by the job manager for a training process: the pipe it writes a line to per event."""
EVENTS_STDOUT = "EDGETUNE_JOB_EVENTS_STDOUT"
"""Set ("1") by a runner that reads the training process's output (Ray): the process then
prints EVENT_MARKER and the job id on a line of its own per event, instead of a pipe."""
EVENT_MARKER = "edgetune-job-event "
REMOTE_MARKER = "edgetune-job-record "
"""Prefix of the line a training process with a job store of its own (a Ray job away from
the server's home: `training/package.py`) prints per event: the event and the job's
fields after it, as JSON, which the server records in its store (`record_remote`)."""
REMOTE_FIELDS = ("state", "progress", "metrics", "result", "error", "finished")
"""The job's columns such a process owns; the server keeps the rest (attempts, pid...)."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    created TEXT NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    spec TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    metrics TEXT NOT NULL DEFAULT '{}',
    result TEXT NOT NULL DEFAULT '{}',
    error TEXT NOT NULL DEFAULT '',
    started TEXT NOT NULL DEFAULT '',
    finished TEXT NOT NULL DEFAULT '',
    pid INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    seq INTEGER NOT NULL,
    time TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS remote_events (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    attempt INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL REFERENCES jobs (id),
    epoch INTEGER NOT NULL,
    step INTEGER NOT NULL,
    path TEXT NOT NULL,
    metrics TEXT NOT NULL,
    created TEXT NOT NULL,
    PRIMARY KEY (job_id, epoch)
);
"""


@dataclass(slots=True)
class Job:
    """A job row."""

    id: str
    state: JobState
    spec: JobSpec
    created: str
    progress: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    started: str = ""
    finished: str = ""
    pid: int = 0
    attempts: int = 0


@dataclass(frozen=True, slots=True)
class Event:
    """An event row; `data` holds progress, metrics or result."""

    job_id: str
    seq: int
    time: str
    state: JobState
    message: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A saved training checkpoint (a transformers folder with safetensors weights)."""

    epoch: int
    step: int
    path: Path
    metrics: dict[str, float]


class JobStore:
    """SQLite-backed jobs, events and checkpoints; safe to call from several threads (one
    connection, used under a lock), so the server can keep its queries off the event loop.

    :param on_event: called with the job id after each committed event; by default, in a
        training process the manager started, a line to the manager's pipe.
    """

    def __init__(self, path: Path, on_event: Callable[[str], None] | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.on_event = on_event or _pipe_notifier()
        # sqlite3 leaves serializing a shared connection to its user: one transaction at a
        # time, and no query from another thread inside one.
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _read(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, tuple(params)).fetchall()

    def _notify(self, job_id: str) -> None:
        if self.on_event is not None:
            self.on_event(job_id)

    # -- jobs ---------------------------------------------------------------------------

    def create(
        self, spec: JobSpec, state: JobState, message: str, max_waiting: int = 0
    ) -> tuple[Job, bool]:
        """Insert a job, or return the one with the same idempotency key.

        :param max_waiting: refuse a new job while this many are validating or queued
            (0: no limit); counted in the same transaction as the insert.
        :return: (job, created) — created is False when the key was used before.
        :raises ResourceExhausted: max_waiting jobs are already waiting.
        """
        with self._write() as db:
            if spec.idempotency_key:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?", (spec.idempotency_key,)
                ).fetchone()
                if row is not None:
                    return _job(row), False
            if max_waiting:
                (waiting,) = db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN (?, ?)",
                    (str(JobState.VALIDATING), str(JobState.QUEUED)),
                ).fetchone()
                if waiting >= max_waiting:
                    raise ResourceExhausted(
                        f"{waiting} jobs are already waiting (max_queued_jobs = {max_waiting}); "
                        "retry when one has started"
                    )
            job_id = "job_" + uuid.uuid4().hex[:20]
            db.execute(
                "INSERT INTO jobs (id, created, state, idempotency_key, spec) VALUES (?,?,?,?,?)",
                (job_id, utc_now(), state, spec.idempotency_key or None, spec.model_dump_json()),
            )
            self._event(db, job_id, state, message, {})
        self._notify(job_id)
        return self.get(job_id), True

    def get(self, job_id: str) -> Job:
        """A job by id; NotFound when there is none."""
        if len(job_id) > MAX_JOB_ID:
            raise InvalidArgument(f"job id {quoted(job_id)} is not a job id (too long)")
        rows = self._read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise NotFound(f"job {quoted(job_id)} not found")
        return _job(rows[0])

    def list_jobs(
        self, states: Iterable[JobState] = (), limit: int = 50, page_token: str = ""
    ) -> tuple[list[Job], str]:
        """Jobs newest first, at most limit; returns them and the token of the next page."""
        clauses: list[str] = []
        params: list[Any] = []
        wanted = [str(s) for s in states]
        if wanted:
            clauses.append(f"state IN ({','.join('?' * len(wanted))})")
            params += wanted
        if page_token:
            # ASCII digits that fit SQLite's integer ("²" is a digit to str.isdigit()).
            if not (page_token.isascii() and page_token.isdigit() and len(page_token) < 19):
                raise InvalidArgument("page_token is not valid: pass next_page_token unchanged")
            clauses.append("rowid < ?")
            params.append(int(page_token))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._read(
            f"SELECT rowid, * FROM jobs {where} ORDER BY rowid DESC LIMIT ?",
            (*params, limit + 1),
        )
        next_token = str(rows[limit - 1]["rowid"]) if len(rows) > limit else ""
        return [_job(row) for row in rows[:limit]], next_token

    def in_states(self, states: Iterable[JobState]) -> list[Job]:
        """Every job in the given states, oldest first."""
        wanted = [str(s) for s in states]
        rows = self._read(
            f"SELECT * FROM jobs WHERE state IN ({','.join('?' * len(wanted))}) ORDER BY rowid",
            wanted,
        )
        return [_job(row) for row in rows]

    def transition(
        self,
        job_id: str,
        state: JobState,
        message: str,
        *,
        allowed_from: Iterable[JobState] | None = None,
        data: dict[str, Any] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a job to state (only from allowed_from; never out of a final state),
        update fields, and append an event — all in one transaction.

        :return: False when the job was not in an allowed state (nothing changed).
        """
        allowed = [str(s) for s in (allowed_from or JobState) if s not in FINAL_STATES]
        if state in FINAL_STATES:
            fields.setdefault("finished", utc_now())
        columns = {"state": str(state), **{k: _encode(v) for k, v in fields.items()}}
        assignments = ", ".join(f"{column} = ?" for column in columns)
        with self._write() as db:
            changed = db.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ? "
                f"AND state IN ({','.join('?' * len(allowed))})",
                (*columns.values(), job_id, *allowed),
            ).rowcount
            if changed:
                self._event(db, job_id, state, message, data or {})
        if changed:
            self._notify(job_id)
        return bool(changed)

    def update(self, job_id: str, message: str, data: dict[str, Any], **fields: Any) -> None:
        """Update fields of a job that is not final and append an event (progress, metrics)."""
        columns = {k: _encode(v) for k, v in fields.items()}
        assignments = ", ".join(f"{column} = ?" for column in columns) or "id = id"
        with self._write() as db:
            row = db.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobState(row["state"]) in FINAL_STATES:
                return
            db.execute(
                f"UPDATE jobs SET {assignments} WHERE id = ?",
                (*columns.values(), job_id),
            )
            self._event(db, job_id, JobState(row["state"]), message, data)
        self._notify(job_id)

    def adopt(self, job: Job) -> None:
        """Insert a copy of a job row of another store: a training process away from the
        server's home keeps its job in a store of its own (`training/package.py`)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO jobs (id, created, state, spec, progress, metrics, "
                "result, error, started, finished, pid, attempts) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    job.id,
                    job.created,
                    str(job.state),
                    job.spec.model_dump_json(),
                    json.dumps(job.progress),
                    json.dumps(job.metrics),
                    json.dumps(job.result),
                    job.error,
                    job.started,
                    job.finished,
                    job.pid,
                    job.attempts,
                ),
            )

    def record_remote(self, job_id: str, attempt: int, record: dict[str, Any]) -> bool:
        """Record one event a training process with a store of its own printed (a
        REMOTE_MARKER line): its event, and the job's REMOTE_FIELDS as they were after it.
        Exactly once: a record of another attempt, of a job already final, or seen before
        (the log read again from its start after a restart) changes nothing.

        :raises ValueError: the record is not one (a field missing or of the wrong kind).
        """
        seq, fields = int(record["seq"]), record["fields"]
        state = JobState(record["state"])
        columns = {name: _encode(fields[name]) for name in REMOTE_FIELDS if name in fields}
        if "state" in columns:
            columns["state"] = str(JobState(columns["state"]))
        assignments = ", ".join(f"{column} = ?" for column in columns) or "id = id"
        with self._write() as db:
            row = db.execute("SELECT state, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or JobState(row["state"]) in FINAL_STATES or row["attempts"] != attempt:
                return False
            seen = db.execute(
                "SELECT seq FROM remote_events WHERE job_id = ? AND attempt = ?", (job_id, attempt)
            ).fetchone()
            if seen is not None and seq <= seen["seq"]:
                return False
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))
            self._event(
                db, job_id, state, str(record["message"]), dict(record["data"]), record["time"]
            )
            db.execute(
                "INSERT OR REPLACE INTO remote_events VALUES (?, ?, ?)", (job_id, attempt, seq)
            )
        self._notify(job_id)
        return True

    # -- events -------------------------------------------------------------------------

    def _event(
        self,
        db: sqlite3.Connection,
        job_id: str,
        state: JobState,
        message: str,
        data: dict[str, Any],
        time: str = "",
    ) -> None:
        db.execute(
            "INSERT INTO events (job_id, seq, time, state, message, data) "
            "SELECT ?, COALESCE(MAX(seq), 0) + 1, ?, ?, ?, ? FROM events WHERE job_id = ?",
            (job_id, time or utc_now(), str(state), message, json.dumps(data), job_id),
        )

    def events(self, job_id: str, after: int = 0) -> list[Event]:
        """Events of a job with seq > after, in order."""
        if after > MAX_SEQUENCE:
            raise InvalidArgument(
                f"after_sequence {after} is larger than any event sequence ({MAX_SEQUENCE})"
            )
        rows = self._read(
            "SELECT * FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after)
        )
        return [
            Event(
                r["job_id"],
                r["seq"],
                r["time"],
                JobState(r["state"]),
                r["message"],
                json.loads(r["data"]),
            )
            for r in rows
        ]

    # -- checkpoints --------------------------------------------------------------------

    def add_checkpoint(self, job_id: str, checkpoint: Checkpoint) -> None:
        """Record a checkpoint (replacing one of the same epoch)."""
        with self._write() as db:
            db.execute(
                "INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?,?,?)",
                (
                    job_id,
                    checkpoint.epoch,
                    checkpoint.step,
                    str(checkpoint.path),
                    json.dumps(checkpoint.metrics),
                    utc_now(),
                ),
            )

    def remove_checkpoint(self, job_id: str, epoch: int) -> None:
        """Forget a checkpoint whose folder was deleted."""
        with self._write() as db:
            db.execute("DELETE FROM checkpoints WHERE job_id = ? AND epoch = ?", (job_id, epoch))

    def checkpoints(self, job_id: str) -> list[Checkpoint]:
        """Checkpoints of a job whose folders still exist, by epoch."""
        rows = self._read("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY epoch", (job_id,))
        found = [
            Checkpoint(r["epoch"], r["step"], Path(r["path"]), json.loads(r["metrics"]))
            for r in rows
        ]
        return [c for c in found if (c.path / "config.json").is_file()]


@functools.cache
def _pipe_notifier() -> Callable[[str], None] | None:
    """In a training process the manager started, a function that writes a line to the
    manager's pipe per event; None elsewhere.

    Read once and removed from the environment, so a process this one starts never writes
    to a descriptor number it does not own. The write never blocks: when the pipe is full
    the manager is behind and already has a wake-up to read, so one more adds nothing.
    """
    value = os.environ.pop(EVENTS_FD, "")
    if os.environ.pop(EVENTS_STDOUT, "") == "1" and not value:
        return _stdout_notifier
    if not value.isdigit():
        return None
    fd = int(value)
    try:
        os.set_blocking(fd, False)
    except OSError:  # not open in this process: no one to tell
        return None

    def notify(job_id: str) -> None:
        # OSError: full (BlockingIOError), or the server has gone (BrokenPipeError).
        with contextlib.suppress(OSError):
            os.write(fd, job_id.encode()[:MAX_JOB_ID] + b"\n")

    return notify


def _stdout_notifier(job_id: str) -> None:
    """A line per event on stdout, which the runner reads from the process's log stream."""
    with contextlib.suppress(OSError, ValueError):  # stdout closed: no one reads it
        sys.stdout.write(f"{EVENT_MARKER}{job_id[:MAX_JOB_ID]}\n")
        sys.stdout.flush()


class RemoteRecorder:
    """`on_event` of a training process's own job store (away from the server's home):
    prints each new event, with the job's REMOTE_FIELDS after it, as a REMOTE_MARKER line
    on stdout, which reaches the server through the runner's log stream."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.seq = 0
        self._lock = threading.Lock()

    def __call__(self, job_id: str) -> None:
        with self._lock:
            job = self.store.get(job_id)
            fields = {name: getattr(job, name) for name in REMOTE_FIELDS}
            fields["state"] = str(job.state)
            for event in self.store.events(job_id, self.seq):
                record = {
                    "seq": event.seq,
                    "time": event.time,
                    "state": str(event.state),
                    "message": event.message,
                    "data": event.data,
                    "fields": fields,
                }
                sys.stdout.write(f"{REMOTE_MARKER}{json.dumps(record)}\n")
                self.seq = event.seq
            sys.stdout.flush()


def _encode(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, dict) else value


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        state=JobState(row["state"]),
        spec=JobSpec.model_validate_json(row["spec"]),
        created=row["created"],
        progress=json.loads(row["progress"]),
        metrics=json.loads(row["metrics"]),
        result=json.loads(row["result"]),
        error=row["error"],
        started=row["started"],
        finished=row["finished"],
        pid=row["pid"],
        attempts=row["attempts"],
    )
