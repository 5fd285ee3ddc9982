"""What the serving path tells the server's telemetry, without knowing about it.

`Timing` is one ONNX Runtime call (a batch) and how its time split between tokenization
and inference. `CallRecord` is what one RPC did (the model it ran on, its inputs, its
queue and inference time); the telemetry interceptor puts a fresh one in `CURRENT_CALL`
around each call and reads it when the call ends, so the serving code only fills in what
it knows. `Observer` receives the events that are not tied to one call: batch runs and
model loads. The defaults do nothing, and with telemetry off no record exists.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field

from edgetune.store import ModelVersion

NS = 1e-9


@dataclass(slots=True)
class Timing:
    """One ONNX Runtime call, in time.time_ns(): encode from started to encoded, run and
    decode from encoded to ended."""

    started_ns: int
    encoded_ns: int
    ended_ns: int
    inputs: int
    small: bool = False
    """Ran on the model's one-thread session (beside other runs, or small and alone)."""
    inline: bool = False
    """Ran on the event-loop thread, without the pool's two thread hand-offs (Batcher)."""
    calls: int = 1
    """Session calls the batch took: more than one when it was split by length."""

    @property
    def tokenize_s(self) -> float:
        """Seconds spent encoding the inputs (tokenization, image decoding)."""
        return (self.encoded_ns - self.started_ns) * NS

    @property
    def inference_s(self) -> float:
        """Seconds spent in the session (and decoding its outputs)."""
        return (self.ended_ns - self.encoded_ns) * NS


@dataclass(slots=True)
class CallRecord:
    """What one RPC did, filled in by the serving code while it runs."""

    model: str = ""
    """The model it ran on, once resolved in the repository (never a name that does not
    exist, so metric labels stay bounded)."""
    version: str = ""
    inputs: int = 0
    queue_s: float = 0.0
    tokenize_s: float = 0.0
    inference_s: float = 0.0
    keep_runs: bool = False
    """Keep each run's timestamps (for trace spans)."""
    runs: list[tuple[int, Timing]] = field(default_factory=list)
    """(enqueued_ns, timing) of each batch the call's inputs ran in, when keep_runs."""

    def ran(self, inputs: int, enqueued_ns: int, timing: Timing) -> None:
        """Count one request's inputs that ran in the batch `timing` describes."""
        self.inputs += inputs
        self.queue_s += max(timing.started_ns - enqueued_ns, 0) * NS
        self.tokenize_s += timing.tokenize_s
        self.inference_s += timing.inference_s
        if self.keep_runs:
            self.runs.append((enqueued_ns, timing))


CURRENT_CALL: ContextVar[CallRecord | None] = ContextVar("edgetune_call", default=None)


class Observer:
    """Receives serving events; this base ignores them (telemetry off)."""

    def batch_ran(self, version: ModelVersion, timing: Timing) -> None:
        """One ONNX Runtime call of a version finished."""

    def model_loaded(self, version: ModelVersion, seconds: float, error: str = "") -> None:
        """A load of a version ended, in `seconds`; `error` says why it failed, if it did."""
