"""What operators watch: Prometheus metrics, the request log and OpenTelemetry traces.

`TelemetryInterceptor` (the outermost interceptor, installed only when one of the three is
on) puts a fresh `CallRecord` in place around every call except health and reflection,
and when the call ends counts it, logs it and ends its span. The serving code fills the
record in (edgetune.serving.observe); batch runs and model loads reach `Metrics` as an
`Observer`. Metric labels are bounded: the method is one of the services' methods, and
the model and version are set only once the repository resolved them, so a request for a
model that does not exist counts under model="".
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from grpc import aio
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from edgetune.server.interceptors import rebuild_handler
from edgetune.serving.observe import CURRENT_CALL, CallRecord, Observer, Timing
from edgetune.serving.registry import ModelRegistry
from edgetune.settings import Settings
from edgetune.store import ModelVersion
from edgetune.training.spec import JobState

log = logging.getLogger(__name__)
access_log = logging.getLogger("edgetune.access")
Handler = Any  # grpc.RpcMethodHandler
NAMESPACE = "edgetune"
UNOBSERVED = ("/grpc.health.v1.Health/", "/grpc.reflection.")
"""Method prefixes that are neither counted, logged nor traced (probes and tooling)."""
LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics(Observer):
    """The server's Prometheus metrics, in their own registry (so two servers in one
    process, as in tests, do not share counters)."""

    def __init__(self, registry: ModelRegistry, jobs_db: Path) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        model = ("model", "version")
        self.requests = Counter(
            "requests",
            "RPCs handled, by method, model, version and gRPC status code",
            ("method", *model, "code"),
            namespace=NAMESPACE,
            registry=r,
        )
        self.request_duration = Histogram(
            "request_duration_seconds",
            "Time from the call's arrival to its answer, in the server",
            ("method", *model),
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_duration = Histogram(
            "queue_duration_seconds",
            "Time a request's inputs waited for their batch to start",
            model,
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokenization_duration = Histogram(
            "tokenization_duration_seconds",
            "Time one batch spent encoding its inputs (tokenization, image decoding)",
            model,
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "inference_duration_seconds",
            "Time one batch spent in ONNX Runtime (and decoding its outputs)",
            model,
            namespace=NAMESPACE,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "batch_size",
            "Inputs per ONNX Runtime call (average batch = _sum / _count)",
            model,
            namespace=NAMESPACE,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.small_session_runs = Counter(
            "small_session_runs",
            "ONNX Runtime calls that took the model's one-thread session (beside other runs, or "
            "small ones alone)",
            model,
            namespace=NAMESPACE,
            registry=r,
        )
        self.inline_runs = Counter(
            "inline_runs",
            "ONNX Runtime calls run on the event-loop thread (a lone small request on an idle "
            "model) instead of an inference worker",
            model,
            namespace=NAMESPACE,
            registry=r,
        )
        self.split_batches = Counter(
            "split_batches",
            "Batches run as several ONNX Runtime calls of similar length instead of one padded "
            "to the longest input",
            model,
            namespace=NAMESPACE,
            registry=r,
        )
        self.model_loads = Counter(
            "model_loads",
            "Model version loads, by outcome (success, failure)",
            ("model", "outcome"),
            namespace=NAMESPACE,
            registry=r,
        )
        self.model_load_duration = Histogram(
            "model_load_duration_seconds",
            "Time to check, open and warm up a model version",
            ("model",),
            namespace=NAMESPACE,
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(registry, jobs_db))
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._runs: dict[tuple[str, int], tuple[Any, Any, Any, Any, Any, Any]] = {}
        self._calls: dict[tuple[str, str, str, str], tuple[Any, Any, Any]] = {}

    def batch_ran(self, version: ModelVersion, timing: Timing) -> None:
        children = self._runs.get(version.key)
        if children is None:
            labels = (version.name, str(version.version))
            children = self._runs[version.key] = (
                self.batch_size.labels(*labels),
                self.tokenization_duration.labels(*labels),
                self.inference_duration.labels(*labels),
                self.small_session_runs.labels(*labels),
                self.inline_runs.labels(*labels),
                self.split_batches.labels(*labels),
            )
        batch, tokenization, inference, small, inline, split = children
        batch.observe(timing.inputs)
        tokenization.observe(timing.tokenize_s)
        inference.observe(timing.inference_s)
        if timing.small:
            small.inc()
        if timing.inline:
            inline.inc()
        if timing.calls > 1:
            split.inc()

    def model_loaded(self, version: ModelVersion, seconds: float, error: str = "") -> None:
        self.model_loads.labels(version.name, "failure" if error else "success").inc()
        if not error:
            self.model_load_duration.labels(version.name).observe(seconds)

    def call_ended(self, method: str, record: CallRecord, code: str, seconds: float) -> None:
        """Count one RPC."""
        key = (method, record.model, record.version, code)
        children = self._calls.get(key)
        if children is None:  # label sets are bounded, so this cache is too
            children = self._calls[key] = (
                self.requests.labels(*key),
                self.request_duration.labels(*key[:3]),
                self.queue_duration.labels(*key[1:3]),
            )
        count, duration, queue = children
        count.inc()
        duration.observe(seconds)
        if record.inputs:
            queue.observe(record.queue_s)

    def serve(self, settings: Settings) -> Any:
        """Start the HTTP endpoint on the server's host and the metrics port (TLS when the
        gRPC server has it); the server object, to shut down."""
        cert, key, client_ca = (
            settings.security.tls_cert_file,
            settings.security.tls_key_file,
            settings.security.tls_client_ca_file,
        )
        httpd, _ = start_http_server(
            settings.observability.metrics_port,
            settings.server.host.strip("[]"),
            self.registry,
            certfile=str(cert) if cert and key else None,
            keyfile=str(key) if cert and key else None,
            client_cafile=str(client_ca) if client_ca else None,
            client_auth_required=client_ca is not None,
        )
        log.info(
            "Prometheus metrics on %s:%d/metrics",
            settings.server.host,
            settings.observability.metrics_port,
        )
        return httpd


class _StateCollector:
    """Gauges read when Prometheus scrapes: loaded models and their memory (from the
    registry), jobs by state, trials and epochs done and training throughput (from the
    job database, on a read-only connection of its own)."""

    def __init__(self, registry: ModelRegistry, jobs_db: Path) -> None:
        self.models = registry
        self.jobs_db = jobs_db

    def collect(self) -> Iterator[Metric]:
        loaded = self.models.loaded
        yield GaugeMetricFamily(
            f"{NAMESPACE}_models_loaded", "Model versions loaded and serving", len(loaded)
        )
        memory = GaugeMetricFamily(
            f"{NAMESPACE}_model_memory_bytes",
            "Memory each loaded version is counted at (what the memory budget counts)",
            labels=("model", "version"),
        )
        for (name, number), served in sorted(loaded.items()):
            memory.add_metric((name, str(number)), served.memory_bytes)
        yield memory
        yield GaugeMetricFamily(
            f"{NAMESPACE}_model_memory_budget_bytes",
            "The memory budget of loaded models; 0 when there is none",
            self.models.budget_bytes,
        )
        yield from self._jobs()

    def _jobs(self) -> Iterator[Metric]:
        states = {state.value: 0 for state in JobState}
        trials: dict[str, int] = {}
        epochs = 0
        speed = 0.0
        if self.jobs_db.exists():
            db = sqlite3.connect(f"file:{self.jobs_db}?mode=ro", uri=True, timeout=5)
            try:
                for state, count in db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY 1"):
                    states[state] = count
                for state, count in db.execute(
                    "SELECT json_extract(data, '$.trial.state'), COUNT(*) FROM events "
                    "WHERE json_extract(data, '$.trial') IS NOT NULL GROUP BY 1"
                ):
                    trials[str(state)] = count
                (epochs,) = db.execute(
                    "SELECT COUNT(*) FROM events WHERE json_extract(data, '$.epoch') IS NOT NULL"
                ).fetchone()
                (speed,) = db.execute(
                    "SELECT COALESCE(SUM(json_extract(progress, '$.examples_per_second')), 0) "
                    "FROM jobs WHERE state = ?",
                    (JobState.RUNNING.value,),
                ).fetchone()
            except sqlite3.Error as exc:
                log.warning("metrics: cannot read the job database: %s", exc)
            finally:
                db.close()
        jobs = GaugeMetricFamily(f"{NAMESPACE}_jobs", "Fine-tuning jobs by state", labels=["state"])
        for state, count in states.items():
            jobs.add_metric([state], count)
        yield jobs
        done = CounterMetricFamily(
            f"{NAMESPACE}_trials", "Search trials that ended, by outcome", labels=["state"]
        )
        for state, count in sorted(trials.items()):
            done.add_metric([state], count)
        yield done
        yield CounterMetricFamily(
            f"{NAMESPACE}_epochs", "Training epochs completed and evaluated", epochs
        )
        yield GaugeMetricFamily(
            f"{NAMESPACE}_training_examples_per_second",
            "Training throughput of the running jobs together",
            float(speed),
        )


class TelemetryInterceptor(aio.ServerInterceptor):
    """Counts, logs and traces every call but health and reflection."""

    def __init__(self, metrics: Metrics | None, access: str, tracer_provider: Any = None) -> None:
        self.metrics = metrics
        self.access = access if access != "off" else ""
        self.tracer = tracer_provider.get_tracer("edgetune") if tracer_provider else None
        if self.access:
            access_log.setLevel(logging.INFO)
        # Handlers are fixed per method unless an interceptor after this one builds a new
        # one per call (a refusal, a re-checked stream): wrap each distinct handler once.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method: str = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(UNOBSERVED):
            return handler
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = rebuild_handler(
            handler,
            lambda behavior, _stream_request: self._observed(method, behavior),
            handler.request_deserializer,
        )
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _observed(self, full_method: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        service, _, method = full_method.strip("/").rpartition("/")

        if inspect.isasyncgenfunction(behavior):

            async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
                call = self._begin(service, method, context)
                try:
                    async for response in behavior(request, context):
                        yield response
                except BaseException:
                    self._end(call, context, failed=True)
                    raise
                self._end(call, context, failed=False)

            return stream

        async def unary(request: Any, context: Any) -> Any:
            call = self._begin(service, method, context)
            try:
                response = await behavior(request, context)
            except BaseException:
                self._end(call, context, failed=True)
                raise
            self._end(call, context, failed=False)
            return response

        return unary

    def _begin(self, service: str, method: str, context: Any) -> _Call:
        record = CallRecord(keep_runs=self.tracer is not None)
        call = _Call(service, method, record, time.perf_counter(), CURRENT_CALL.set(record))
        if self.tracer is not None:
            call.start_span(self.tracer, context)
        return call

    def _end(self, call: _Call, context: Any, failed: bool) -> None:
        with contextlib.suppress(ValueError):  # a stream closed from another context
            CURRENT_CALL.reset(call.token)
        seconds = time.perf_counter() - call.started
        code = _code_name(context, failed)
        if self.metrics is not None:
            self.metrics.call_ended(call.method, call.record, code, seconds)
        if self.access:
            _log_access(self.access, call, code, seconds, context.peer())
        if call.span is not None:
            call.end_span(self.tracer, code)


class _Call:
    """One call in flight: its record, start time, context token and span."""

    __slots__ = ("method", "record", "service", "span", "span_token", "started", "token")

    def __init__(
        self, service: str, method: str, record: CallRecord, started: float, token: Any
    ) -> None:
        self.service, self.method, self.record = service, method, record
        self.started, self.token = started, token
        self.span: Any = None
        self.span_token: Any = None

    def start_span(self, tracer: Any, context: Any) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import propagate, trace

        carrier = {
            key: value
            for key, value in context.invocation_metadata() or ()
            if isinstance(value, str)
        }
        self.span = tracer.start_span(
            f"{self.service}/{self.method}",
            context=propagate.extract(carrier),
            kind=trace.SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": self.service,
                "rpc.method": self.method,
            },
        )
        # Current for the call, so work it starts (a job's training process) joins the trace.
        self.span_token = otel_context.attach(trace.set_span_in_context(self.span))

    def end_span(self, tracer: Any, code: str) -> None:
        from opentelemetry import context as otel_context
        from opentelemetry import trace

        span, record = self.span, self.record
        parent = trace.set_span_in_context(span)
        for enqueued, timing in record.runs:
            for name, start, end in (
                ("queue", enqueued, timing.started_ns),
                ("tokenize", timing.started_ns, timing.encoded_ns),
                ("inference", timing.encoded_ns, timing.ended_ns),
            ):
                child = tracer.start_span(name, context=parent, start_time=min(start, end))
                child.set_attribute("edgetune.batch_inputs", timing.inputs)
                child.end(end_time=end)
        if record.model:
            span.set_attribute("edgetune.model", record.model)
            span.set_attribute("edgetune.version", record.version)
            span.set_attribute("edgetune.inputs", record.inputs)
        span.set_attribute("rpc.grpc.status_code", _CODE_NUMBERS.get(code, 2))
        if code != "OK":
            span.set_status(trace.Status(trace.StatusCode.ERROR, code))
        otel_context.detach(self.span_token)
        span.end()


_CODE_NUMBERS = {code.name: code.value[0] for code in grpc.StatusCode}


def _code_name(context: Any, failed: bool) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return str(code.name)
    if isinstance(code, int) and not isinstance(code, bool):
        return next((c.name for c in grpc.StatusCode if c.value[0] == code), "UNKNOWN")
    return "CANCELLED" if failed else "OK"


def _log_access(style: str, call: _Call, code: str, seconds: float, peer: str) -> None:
    record = call.record
    fields = {
        "method": call.method,
        "model": record.model,
        "version": record.version,
        "inputs": record.inputs,
        "status": code,
        "duration_ms": round(seconds * 1000, 3),
        "queue_ms": round(record.queue_s * 1000, 3),
        "tokenize_ms": round(record.tokenize_s * 1000, 3),
        "inference_ms": round(record.inference_s * 1000, 3),
        "peer": peer,
    }
    if style == "json":
        access_log.info(json.dumps(fields))
    else:
        access_log.info(" ".join(f"{k}={v if v != '' else '-'}" for k, v in fields.items()))
