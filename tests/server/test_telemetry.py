"""Operating the server: Prometheus metrics (scraped by a real Prometheus server), the
request log and OpenTelemetry traces."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakes import scrape_metrics
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from edgetune.client import free_port
from edgetune.server.app import RunningServer, start_server
from edgetune.task import Text
from edgetune.tracing import tracer_provider_from_env
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

SECRET = "the quarterly numbers are confidential"


@pytest.fixture
async def observed(settings, plugins) -> AsyncIterator[RunningServer]:
    """A server with metrics on a free port and the JSON request log."""
    settings = settings.replace(metrics_port=free_port())
    settings = settings.replace(access_log="json")
    running = await start_server(settings, plugins)
    yield running
    await running.stop(0)


async def classify(port: int, model: str = "tiny", text: str = SECRET, **kwargs: Any) -> Any:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = ipb.ClassifyRequest(model=model, inputs=[ipb.Input(text=text)])
        return await stub.Classify(request, **kwargs)


def value(samples: list[Any], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


async def test_metrics_count_requests_batches_and_loads(observed) -> None:
    for _ in range(3):
        await classify(observed.port)
    with pytest.raises(aio.AioRpcError) as unknown:
        await classify(observed.port, model="no-such-model-" + "x" * 50)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    families = await asyncio.to_thread(scrape_metrics, observed.metrics_port)

    requests = families["edgetune_requests"]
    labels = {"method": "Classify", "model": "tiny", "version": "1"}
    assert value(requests, "edgetune_requests_total", code="OK", **labels) == 3
    # A model that does not exist is counted without its name: label sets stay bounded.
    assert value(requests, "edgetune_requests_total", code="NOT_FOUND", model="") == 1
    assert not any("no-such-model" in str(s.labels) for f in families.values() for s in f)
    duration = families["edgetune_request_duration_seconds"]
    assert value(duration, "edgetune_request_duration_seconds_count", **labels) == 3
    batches = families["edgetune_batch_size"]
    tiny = {"model": "tiny", "version": "1"}
    runs = value(batches, "edgetune_batch_size_count", **tiny)
    assert runs >= 1 and value(batches, "edgetune_batch_size_sum", **tiny) == 3
    for name in ("tokenization", "inference"):
        family = families[f"edgetune_{name}_duration_seconds"]
        assert value(family, f"edgetune_{name}_duration_seconds_count", **tiny) == runs
        assert value(family, f"edgetune_{name}_duration_seconds_sum", **tiny) > 0
    queue = families["edgetune_queue_duration_seconds"]
    assert value(queue, "edgetune_queue_duration_seconds_count", **tiny) == 3
    loads = families["edgetune_model_loads"]
    assert value(loads, "edgetune_model_loads_total", model="tiny", outcome="success") == 1
    assert value(families["edgetune_models_loaded"], "edgetune_models_loaded") == 1
    memory = families["edgetune_model_memory_bytes"]
    assert value(memory, "edgetune_model_memory_bytes", **tiny) > 0
    jobs = families["edgetune_jobs"]
    assert {s.labels["state"] for s in jobs} >= {"queued", "running", "succeeded"}
    assert value(families["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0


async def test_short_runs_take_the_one_thread_session_and_are_counted(settings, plugins) -> None:
    settings = settings.replace(
        metrics_port=free_port(), intra_op_threads=2, small_run_tokens=8, intra_op_spinning=False
    )
    running = await start_server(settings, plugins)
    try:
        await running.startup
        served = running.registry.loaded[("tiny", 1)]
        assert served.small_session is not None
        assert served.small_session.get_session_options().intra_op_num_threads == 1
        assert served.session.get_session_options().intra_op_num_threads == 2
        short = await classify(running.port, text="hi")
        long = await classify(running.port, text=" ".join(["word"] * 20))
        # The same long input beside another run (not alone) takes the one-thread session.
        assert served.parallel_runs == 2
        assert served.run([Text(" ".join(["word"] * 20))], 0, False)[1].small
        assert not served.run([Text(" ".join(["word"] * 20))], 0, True)[1].small
        families = await asyncio.to_thread(scrape_metrics, running.metrics_port)
    finally:
        await running.stop(0)
    assert short.results[0].labels and long.results[0].labels
    tiny = {"model": "tiny", "version": "1"}
    runs = value(families["edgetune_batch_size"], "edgetune_batch_size_count", **tiny)
    small = families["edgetune_small_session_runs"]
    # The warm-up runs outside any call; the two calls ran once each, one of them short.
    assert runs == 2
    assert value(small, "edgetune_small_session_runs_total", **tiny) == 1
    # Each call came alone to an idle model, a round trip after the run before it: inline.
    inline = families["edgetune_inline_runs"]
    assert value(inline, "edgetune_inline_runs_total", **tiny) == served.batcher.stats.inline_runs
    assert served.batcher.stats.inline_runs == 2


async def test_with_spinning_threads_runs_alone_take_every_core(settings, plugins) -> None:
    # the default: threads spin, so no thread sleeps and a short run alone is sooner on all
    settings = settings.replace(metrics_port=free_port(), intra_op_threads=2, small_run_tokens=8)
    assert settings.runtime.intra_op_spinning
    running = await start_server(settings, plugins)
    try:
        await running.startup
        served = running.registry.loaded[("tiny", 1)]
        assert served.small_session is not None and served.parallel_runs == 2
        short = await classify(running.port, text="hi")
        # beside another run it still takes the one-thread session
        assert served.run([Text("hi")], 0, False)[1].small
        families = await asyncio.to_thread(scrape_metrics, running.metrics_port)
    finally:
        await running.stop(0)
    assert short.results[0].labels
    tiny = {"model": "tiny", "version": "1"}
    assert value(families["edgetune_batch_size"], "edgetune_batch_size_count", **tiny) == 1
    assert (
        value(families["edgetune_small_session_runs"], "edgetune_small_session_runs_total", **tiny)
        == 0
    )


async def test_the_models_of_a_server_share_its_cores(
    settings, plugins, repository, tiny_bert
) -> None:
    from edgetune.exporters.onnx import import_model

    import_model(repository, plugins.task("text-classification"), "other", tiny_bert)
    running = await start_server(settings.replace(inference_workers=3), plugins)
    try:
        await running.startup
        for model in ("tiny", "other"):
            assert (await classify(running.port, model=model, text="hi")).results[0].labels
        first = running.registry.loaded[("tiny", 1)].batcher
        second = running.registry.loaded[("other", 1)].batcher
    finally:
        await running.stop(0)
    # one budget for both models: a run is alone only when no model runs, and both
    # together run at most one batch per inference worker at once
    assert first is not None and second is not None
    assert first.cores is second.cores and first.cores.capacity == 3


async def test_the_request_log_has_one_line_per_call_and_never_the_inputs(observed, caplog) -> None:
    caplog.set_level(logging.INFO, logger="edgetune.access")
    await classify(observed.port)
    with pytest.raises(aio.AioRpcError):
        await classify(observed.port, text="")
    async with aio.insecure_channel(f"127.0.0.1:{observed.port}") as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    lines = [r.getMessage() for r in caplog.records if r.name == "edgetune.access"]
    assert len(lines) == 2  # health checks are not logged
    ok, bad = (json.loads(line) for line in lines)
    assert (ok["method"], ok["model"], ok["version"], ok["inputs"], ok["status"]) == (
        "Classify",
        "tiny",
        "1",
        1,
        "OK",
    )
    assert ok["inference_ms"] > 0 and ok["duration_ms"] >= ok["inference_ms"]
    assert ok["peer"].startswith("ipv4:127.0.0.1:")
    assert (bad["status"], bad["inputs"]) == ("INVALID_ARGUMENT", 0)
    assert all(SECRET not in line for line in lines)


async def test_the_text_request_log(settings, plugins, caplog) -> None:
    settings = settings.replace(access_log="text")
    caplog.set_level(logging.INFO, logger="edgetune.access")
    running = await start_server(settings, plugins)
    try:
        await classify(running.port)
    finally:
        await running.stop(0)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "edgetune.access"]
    assert line.startswith("method=Classify model=tiny version=1 inputs=1 status=OK ")
    assert "peer=ipv4:127.0.0.1:" in line and SECRET not in line


async def test_a_span_per_call_joins_the_callers_trace(settings, plugins) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = await start_server(settings, plugins, tracer_provider=provider)
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    try:
        await classify(running.port, metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),))
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        with pytest.raises(aio.AioRpcError):
            await classify(running.port, model="nope")
    finally:
        await running.stop(0)
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name == "edgetune.v1.Inference/Classify"]
    assert len(calls) == 2  # and none for the health check
    assert not [s for s in spans if "Health" in s.name]
    call = next(s for s in calls if s.parent is not None)
    assert f"{call.context.trace_id:032x}" == trace_id
    assert f"{call.parent.span_id:016x}" == parent_id
    assert call.attributes["rpc.system"] == "grpc"
    assert call.attributes["edgetune.model"] == "tiny"
    assert call.attributes["rpc.grpc.status_code"] == 0
    children = sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id),
        key=lambda s: s.start_time,
    )
    assert [s.name for s in children] == ["queue", "tokenize", "inference"]
    assert call.start_time <= children[0].start_time
    assert children[-1].end_time <= call.end_time
    failed = next(s for s in calls if s.parent is None)
    assert failed.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not failed.status.is_ok


def test_tracing_is_off_unless_the_otel_variables_ask(monkeypatch) -> None:
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracer_provider_from_env() is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    provider = tracer_provider_from_env()
    assert provider is not None
    provider.shutdown()
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracer_provider_from_env() is None
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "nonesuch")
    with pytest.raises(ValueError, match="nonesuch"):
        tracer_provider_from_env()


# -- a real Prometheus server ------------------------------------------------------------


@contextlib.contextmanager
def prometheus(tmp_path: Path, target_port: int) -> Iterator[str]:
    """Debian's Prometheus scraping 127.0.0.1:target_port every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run scripts/setup-clients.sh (CI does)")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        "  - job_name: edgetune\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def query(base: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query (empty while Prometheus is not up yet)."""
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            answer = json.load(reply)
    except OSError:
        return []
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


async def test_prometheus_scrapes_the_request_counter_and_a_latency_quantile(
    observed, tmp_path
) -> None:
    count = 'sum(edgetune_requests_total{method="Classify",model="tiny",code="OK"})'
    p50 = (
        "histogram_quantile(0.5, sum by (le) "
        '(rate(edgetune_request_duration_seconds_bucket{method="Classify",model="tiny"}[10s])))'
    )
    sent = 0
    with prometheus(tmp_path, observed.metrics_port) as base:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 90
        seen_count = seen_p50 = None
        # Traffic keeps flowing while Prometheus scrapes, so rate() sees it between two
        # scrapes; bounded by the deadline and at most 50,000 calls (a fast server sends
        # 5,000 before a Prometheus slowed by a busy machine has scraped twice).
        while loop.time() < deadline and sent < 50_000:
            await asyncio.gather(*(classify(observed.port) for _ in range(5)))
            sent += 5
            if sent % 50:
                continue
            counted = await asyncio.to_thread(query, base, count)
            quantile = await asyncio.to_thread(query, base, p50)
            if counted and quantile and math.isfinite(float(quantile[0]["value"][1])):
                seen_count = float(counted[0]["value"][1])
                seen_p50 = float(quantile[0]["value"][1])
                break
    assert seen_count is not None, (tmp_path / "prometheus.log").read_text()[-3000:]
    assert 0 < seen_count <= sent
    assert seen_p50 is not None and 0 < seen_p50 < 30
