"""A loaded model version: its ONNX Runtime session and its task runtime."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import onnxruntime as ort

from edgetune.errors import ModelLoadError
from edgetune.serving.batcher import Batcher
from edgetune.serving.buckets import Feeds, LengthSplit
from edgetune.serving.memory import resident_bytes
from edgetune.serving.observe import Timing
from edgetune.store import ModelVersion
from edgetune.store.manifest import MODEL_FILE
from edgetune.store.model_settings import ModelSettings
from edgetune.task import Array, Input, ModelFiles, Result, Task, TaskRuntime

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ServedModel:
    """A model version ready to answer: session, task runtime, and what it was loaded as."""

    version: ModelVersion
    task: Task
    session: ort.InferenceSession
    runtime: TaskRuntime
    load_seconds: float
    memory_bytes: int = 0
    """Resident memory its load added (session, weights, warm-up buffers), at least the
    size of model.onnx; what the memory budget counts."""
    last_used: float = 0.0
    """time.monotonic() of the last request routed to it, for least-recently-used eviction."""
    batcher: Batcher | None = None
    """Set by the inference service on first use."""
    settings: ModelSettings | None = None
    """How this model is served: the server's batching and thread settings with the
    model's model-settings.json applied (set by the registry at load; None = the server's)."""
    small_session: ort.InferenceSession | None = None
    """A one-thread session of the same model (None: every run takes `session`). It takes
    the runs that overlap others, one per core (`parallel_runs` of them at once), and a
    run alone whose largest input holds at most `small_run_tokens` elements (0: none)."""
    small_run_tokens: int = 0
    parallel_runs: int = 1
    """How many runs of this model may be in flight at once: the main session's threads
    when there is a one-thread session, else 1 (runs of a session with a thread per core
    would fight over the same cores)."""
    lengths: LengthSplit | None = None
    """How a batch of mixed lengths is split into calls of similar length (see
    `edgetune.serving.buckets`); None: every batch is one call."""

    @classmethod
    def load(
        cls,
        version: ModelVersion,
        task: Task,
        options: ort.SessionOptions,
        providers: list[str],
        *,
        verify: bool,
        warmup: bool,
        small_options: ort.SessionOptions | None = None,
        small_run_tokens: int = 0,
        length_buckets: bool = False,
    ) -> ServedModel:
        """Check files, open the session(s), build the task runtime and warm up (blocking).

        :param small_options: options of a second session with one intra-op thread, for
            runs that overlap others and for runs alone whose largest input has at most
            `small_run_tokens` elements (0: none); None opens only one session.
        :param length_buckets: split batches of mixed lengths into calls of similar length,
            where the session's shapes say how (`LengthSplit.of`).
        """
        started = time.perf_counter()
        resident_before = resident_bytes()
        if verify:
            version.manifest.verify_files(version.path, version.manifest.served_files())
        session = _open(version, options, providers)
        files = ModelFiles(
            path=version.path,
            manifest=version.manifest,
            input_names=tuple(i.name for i in session.get_inputs()),
            output_names=tuple(o.name for o in session.get_outputs()),
        )
        model = cls(version, task, session, task.runtime(files), 0.0)
        if length_buckets:
            model.lengths = LengthSplit.of(session.get_inputs(), session.get_outputs())
        if small_options is not None:
            model.small_session = _open(version, small_options, providers)
            model.small_run_tokens = small_run_tokens
            model.parallel_runs = max(1, options.intra_op_num_threads)
        if warmup:
            encoded = model.runtime.encode(task.warmup_inputs())
            for warmed in (model.session, model.small_session):
                if warmed is not None:
                    outputs = encoded.per_input(warmed.run(None, encoded.feeds))
                    model.runtime.decode(outputs, encoded, 1)
        model.load_seconds = time.perf_counter() - started
        model.memory_bytes = max(resident_bytes() - resident_before, version.model_file_bytes)
        model.last_used = time.monotonic()
        log.info(
            "loaded %s:%d (%s) on %s in %.2fs, %.1f MiB",
            version.name,
            version.version,
            task.name,
            ",".join(session.get_providers()),
            model.load_seconds,
            model.memory_bytes / 2**20,
        )
        return model

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually runs on."""
        providers: list[str] = self.session.get_providers()
        return providers

    def predict(self, inputs: Sequence[Input], top_k: int) -> list[Result]:
        """Encode, run and decode one batch (blocking; ONNX Runtime releases the GIL)."""
        return self.run(inputs, top_k)[0]

    def run(
        self, inputs: Sequence[Input], top_k: int, alone: bool = True
    ) -> tuple[list[Result], Timing]:
        """`predict`, and how long encoding and inference took.

        :param alone: no other run of this model may start before this one ends, so it may
            take the session with a thread per core (when its inputs are large enough to
            gain from them); False: it runs on the one-thread session, beside others.
        """
        started = time.time_ns()
        encoded = self.runtime.encode(inputs)
        encoded_at = time.time_ns()
        small_runs = 0

        def call(feeds: Feeds) -> list[Array]:
            nonlocal small_runs
            session = self.session
            if self.small_session is not None:
                largest = max((feed.size for feed in feeds.values()), default=0)
                if not alone or largest <= self.small_run_tokens:
                    session = self.small_session
                    small_runs += 1
            outputs: list[Array] = session.run(None, feeds)
            return outputs

        if self.lengths is None:
            outputs, calls = call(encoded.feeds), 1
        else:
            outputs, calls = self.lengths.run(encoded.feeds, call)
        results = self.runtime.decode(encoded.per_input(outputs), encoded, top_k)
        ended = time.time_ns()
        return results, Timing(
            started, encoded_at, ended, len(inputs), small_runs == calls, calls=calls
        )


def _open(
    version: ModelVersion, options: ort.SessionOptions, providers: list[str]
) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(
            str(version.path / MODEL_FILE), sess_options=options, providers=providers
        )
    except Exception as exc:
        raise ModelLoadError(
            f"model {version.name!r} version {version.version}: ONNX Runtime cannot load "
            f"{MODEL_FILE}: {exc}"
        ) from None
