"""A fine-tuning job seen by an operator: the server and its training process export
their spans over OTLP/gRPC (to a collector the test runs), the job's phases join the
trace of the CreateJob call, and the job metrics count its epochs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fakes import jsonl, scrape_metrics, sentiment_rows
from grpc import aio
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from edgetune.client import free_port
from edgetune.server.app import start_server
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

FAST = pb.Hyperparameters(epochs=2, learning_rate=3e-3, batch_size=8, max_length=16)


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[Any] = []

    async def Export(self, request, context):
        for resource in request.resource_spans:
            for scope in resource.scope_spans:
                self.spans.extend(scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def collector(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Collector]:
    """A collector on a free port, and OTEL_* variables that send spans to it."""
    received = Collector()
    server = aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(received, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "edgetune-test")
    yield received
    await server.stop(0)


async def upload_messages(data: bytes) -> AsyncIterator[pb.UploadDatasetRequest]:
    header = pb.DatasetHeader(task="text-classification", filename="train.jsonl")
    yield pb.UploadDatasetRequest(header=header)
    yield pb.UploadDatasetRequest(chunk=data)


async def test_a_jobs_phases_join_the_create_job_trace(
    collector, settings, plugins, tiny_bert
) -> None:
    settings = settings.replace(metrics_port=free_port())
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            dataset = await stub.UploadDataset(upload_messages(jsonl(sentiment_rows(40))))
            job = await stub.CreateJob(
                pb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(tiny_bert),
                    dataset_id=dataset.id,
                    model_name="traced",
                    hyperparameters=FAST,
                )
            )
            async for _ in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=240):
                pass
            final = await stub.GetJob(pb.GetJobRequest(id=job.id))
            assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
            families = await asyncio.to_thread(scrape_metrics, running.metrics_port)
    finally:
        await running.stop(0)  # flushes the server's spans to the collector

    (create,) = [s for s in collector.spans if s.name == "edgetune.v1.FineTuning/CreateJob"]
    in_trace = [s for s in collector.spans if s.trace_id == create.trace_id]
    by_name = {span.name: span for span in in_trace}
    phases = {"edgetune.job", "prepare", "baseline", "features", "train", "publish", "export"}
    assert phases <= set(by_name), sorted(by_name)
    root = by_name["edgetune.job"]
    assert root.parent_span_id == create.span_id  # the training process joined the trace
    for phase in ("prepare", "train", "publish"):
        assert by_name[phase].parent_span_id == root.span_id
    assert by_name["export"].parent_span_id == by_name["publish"].span_id

    assert families["edgetune_epochs"][0].value == 2
    jobs = {s.labels["state"]: s.value for s in families["edgetune_jobs"]}
    assert jobs["succeeded"] == 1 and jobs["running"] == 0
