"""OpenTelemetry tracing, configured by the standard OTEL_* environment variables.

The server and each training process build their tracer provider here. Code that makes
spans uses the OpenTelemetry API (`opentelemetry.trace.get_tracer`), which does nothing
while no provider is set, so tracing off costs nothing. A job's training process joins
the trace of the CreateJob call through the W3C `TRACEPARENT` environment variable.
"""

from __future__ import annotations

import os
from typing import Any

OTLP_EXPORTERS = {"grpc": "otlp_proto_grpc", "http/protobuf": "otlp_proto_http"}
"""OTEL_EXPORTER_OTLP_PROTOCOL -> the span exporter's entry point name (http/protobuf
needs opentelemetry-exporter-otlp-proto-http installed beside edgetune)."""
TRACEPARENT = "TRACEPARENT"
"""Environment variable that carries a parent span into a child process."""


def tracer_provider_from_env() -> Any:
    """An OpenTelemetry TracerProvider configured by the standard OTEL_* variables, or None
    when tracing is off: it is on when OTEL_TRACES_EXPORTER names an exporter other than
    "none" or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), and OTEL_SDK_DISABLED is not "true"."""
    env = os.environ
    exporter_names = [
        name.strip() for name in env.get("OTEL_TRACES_EXPORTER", "").split(",") if name.strip()
    ]
    endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter_names == ["none"]:
        return None
    if not exporter_names and not endpoint:
        return None
    from importlib.metadata import entry_points

    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME") or "edgetune"})
    )
    for name in exporter_names or ["otlp"]:
        if name == "otlp":  # the protocol picks the exporter; edgetune ships gRPC's
            protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
                "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"
            )
            name = OTLP_EXPORTERS.get(protocol, f"otlp ({protocol})")
        found = entry_points(group="opentelemetry_traces_exporter", name=name)
        if not found:
            raise ValueError(f"OTEL_TRACES_EXPORTER: no span exporter named {name!r}")
        provider.add_span_processor(BatchSpanProcessor(next(iter(found)).load()()))
    return provider


def traceparent() -> str:
    """The current span as a W3C traceparent header value; empty when there is none."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent", "")


def context_from_env() -> Any:
    """The parent context the TRACEPARENT variable names (an empty context without it)."""
    from opentelemetry import propagate

    value = os.environ.get(TRACEPARENT, "")
    return propagate.extract({"traceparent": value} if value else {})
