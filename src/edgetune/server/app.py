"""Assemble and run the gRPC server: services, health, reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from edgetune.errors import FailedPrecondition, InvalidArgument, Unavailable
from edgetune.kserve import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
from edgetune.plugins.manager import Plugins
from edgetune.server.finetuning import FineTuningServicer
from edgetune.server.interceptors import AuthInterceptor, ErrorInterceptor
from edgetune.server.kserve import KServeServicer
from edgetune.server.servicers import InferenceServicer, ModelsServicer, ServerServicer
from edgetune.serving.admin import ModelAdmin, ServerState
from edgetune.serving.registry import ModelRegistry
from edgetune.serving.service import InferenceService
from edgetune.serving.session import physical_cores
from edgetune.settings import Settings
from edgetune.store import ModelVersion, open_repository
from edgetune.tracing import tracer_provider_from_env
from edgetune.training.bases import BaseStore
from edgetune.training.datasets import DatasetStore
from edgetune.training.jobs import JobManager
from edgetune.training.jobstore import JobStore
from edgetune.training.service import FineTuningService
from edgetune.v1 import (
    finetuning_pb2,
    finetuning_pb2_grpc,
    inference_pb2,
    inference_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    grpc_predict_v2_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name,
    finetuning_pb2.DESCRIPTOR.services_by_name["FineTuning"].full_name,
    inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name,
    models_pb2.DESCRIPTOR.services_by_name["Models"].full_name,
    server_pb2.DESCRIPTOR.services_by_name["Server"].full_name,
)
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ModelHealth:
    """Keeps grpc.health.v1 in step with the registry.

    Service "<name>:<version>" is SERVING while that version is loaded, and "<name>" while
    the version `latest` points at is: both exactly when a request would be answered
    without a load, as KServe v2 ModelReady and ModelInfo.state say.
    """

    def __init__(self, servicer: health.aio.HealthServicer, registry: ModelRegistry) -> None:
        self.servicer = servicer
        self.registry = registry

    async def __call__(self, version: ModelVersion, loaded: bool) -> None:
        await self.servicer.set(
            f"{version.name}:{version.version}", SERVING if loaded else NOT_SERVING
        )
        ready = await asyncio.to_thread(self.registry.ready, version.name)
        await self.servicer.set(version.name, SERVING if ready else NOT_SERVING)


@dataclass
class RunningServer:
    """A started server and the parts tests and the CLI talk to."""

    server: aio.Server
    port: int
    registry: ModelRegistry
    health: health.aio.HealthServicer
    executor: ThreadPoolExecutor
    jobs: JobManager
    state: ServerState
    startup: asyncio.Task[None]
    """Start-up loading (setting model_control); the server is ready once it is done."""
    metrics_server: Any = None
    tracer_provider: Any = None
    """The OpenTelemetry provider the server made from OTEL_* (flushed at stop)."""
    follower: asyncio.Task[None] | None = None
    """Re-reads the repository every repository_poll_s (None when that is 0)."""

    @property
    def metrics_port(self) -> int:
        """Port of the Prometheus endpoint; 0 when metrics are off."""
        return int(self.metrics_server.server_port) if self.metrics_server is not None else 0

    async def wait_ready(self) -> None:
        """Return once start-up loading has finished (the server then reports ready)."""
        await asyncio.shield(self.startup)

    async def stop(self, grace: float, drain_delay: float = 0.0) -> None:
        """Answer health NOT_SERVING, keep accepting calls for drain_delay seconds (so health
        checkers and balancers see it), let in-flight calls finish within grace, then stop
        training processes (their jobs resume on the next start)."""
        self.state.draining = True
        self.startup.cancel()
        if self.follower is not None:
            self.follower.cancel()
        await self.health.enter_graceful_shutdown()
        if drain_delay:
            await asyncio.sleep(drain_delay)
        await self.server.stop(grace)
        await self.jobs.close()
        if self.metrics_server is not None:
            await asyncio.to_thread(self.metrics_server.shutdown)
            self.metrics_server.server_close()
        if self.tracer_provider is not None:
            await asyncio.to_thread(self.tracer_provider.shutdown)  # exports what is left
        self.executor.shutdown(wait=False, cancel_futures=True)


async def start_server(
    settings: Settings, plugins: Plugins, *, tracer_provider: Any = None, wait_ready: bool = True
) -> RunningServer:
    """Build every service, bind the server's host and port and start serving; then load
    the models the model_control setting asks for and report ready once they are loaded.

    :param tracer_provider: an OpenTelemetry TracerProvider for traces; None reads the
        OTEL_* environment variables (tracing stays off unless they ask for it).
    :param wait_ready: return once start-up loading has finished; False returns at once
        (`RunningServer.wait_ready` waits), as `serve` does so probes get answers early.
    """
    repository = open_repository(settings)
    health_servicer = health.aio.HealthServicer()
    # "" (the whole server) says NOT_SERVING until start-up loading has finished.
    await health_servicer.set("", NOT_SERVING)
    registry = ModelRegistry(repository, plugins, settings)
    registry.listeners.append(ModelHealth(health_servicer, registry))
    await asyncio.to_thread(registry.check_pinned)
    metrics = None
    if settings.observability.metrics_port:
        from edgetune.server.telemetry import Metrics  # prometheus-client only when asked

        metrics = Metrics(registry, settings.jobs_dir / "jobs.db")
        registry.observer = metrics
    own_provider = None
    if tracer_provider is None:
        tracer_provider = own_provider = tracer_provider_from_env()
    executor = ThreadPoolExecutor(
        max_workers=settings.runtime.inference_workers or physical_cores(),
        thread_name_prefix="infer",
    )
    credentials = server_credentials(settings)
    interceptors: list[aio.ServerInterceptor] = [ErrorInterceptor()]
    if settings.security.auth:
        authenticator = plugins.authenticator(settings.security.auth)
        authenticator.configure(settings)
        # First, so a refused call never reaches a (cached, wrapped) handler.
        interceptors.insert(0, AuthInterceptor(authenticator))
    if (
        metrics is not None
        or settings.observability.access_log != "off"
        or tracer_provider is not None
    ):
        from edgetune.server.telemetry import TelemetryInterceptor

        # Outermost, so refused and failed calls are counted, logged and traced too.
        interceptors.insert(
            0, TelemetryInterceptor(metrics, settings.observability.access_log, tracer_provider)
        )
    server = aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", settings.limits.max_message_bytes),
            ("grpc.max_send_message_length", settings.limits.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    inference = InferenceService(registry, settings, executor, metrics)
    state = ServerState()
    admin = ModelAdmin(repository, registry, settings, state)
    inference_pb2_grpc.add_InferenceServicer_to_server(InferenceServicer(inference), server)
    grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        KServeServicer(inference, admin), server
    )
    models_pb2_grpc.add_ModelsServicer_to_server(ModelsServicer(admin), server)
    server_pb2_grpc.add_ServerServicer_to_server(ServerServicer(admin), server)
    datasets = DatasetStore(
        settings.datasets_dir,
        plugins,
        settings.limits.max_dataset_bytes,
        int(settings.limits.datasets_quota_mb * 2**20),
    )
    datasets.remove_stale_uploads()
    jobs = JobManager(
        settings,
        plugins,
        repository,
        registry,
        datasets,
        JobStore(settings.jobs_dir / "jobs.db"),
    )
    bases = BaseStore(
        settings.bases_dir,
        settings.limits.max_base_file_bytes,
        settings.limits.max_base_bytes,
        int(settings.limits.bases_quota_mb * 2**20),
    )
    bases.remove_stale_uploads()
    finetuning_pb2_grpc.add_FineTuningServicer_to_server(
        FineTuningServicer(FineTuningService(jobs, datasets, bases)), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.server.host}:{settings.server.port}"
    try:
        if credentials is None:
            port = server.add_insecure_port(address)
        else:
            port = server.add_secure_port(address, credentials)
    except RuntimeError as exc:
        raise Unavailable(f"cannot listen on {address}: {exc}") from None

    async def load_models() -> None:
        started = time.perf_counter()
        try:
            await registry.load_at_startup(settings.runtime.model_control)
        except Exception:  # a bug, not a model that failed (those are logged and skipped)
            log.exception("start-up loading failed; models load on their first request")
        state.starting = False
        if not state.draining:
            await health_servicer.set("", SERVING)
        log.info(
            "ready: %d model versions loaded in %.2fs",
            len(registry.loaded),
            time.perf_counter() - started,
        )

    async def follow_repository(period: float) -> None:
        # An interval timer, not synchronisation: the repository signals nothing when
        # another replica publishes, so it is read every `repository_poll_s`.
        await startup
        while True:
            await asyncio.sleep(period)
            try:
                await registry.follow()
            except Exception:
                log.exception("following the repository failed; trying again")

    # Loading starts now, in threads, while the server binds and the job store recovers.
    startup = asyncio.create_task(load_models())
    poll = settings.runtime.repository_poll_s
    follower = asyncio.create_task(follow_repository(poll)) if poll else None
    try:
        metrics_server = metrics.serve(settings) if metrics is not None else None
        await server.start()
        await jobs.start()
    except BaseException:
        startup.cancel()
        if follower is not None:
            follower.cancel()
        raise
    for name in SERVICE_NAMES:
        await health_servicer.set(name, SERVING)
    log.info(
        "edgetune serving on %s:%d (providers: %s); loading models (model_control=%s)",
        settings.server.host,
        port,
        ", ".join(registry.providers),
        settings.runtime.model_control,
    )

    running = RunningServer(
        server,
        port,
        registry,
        health_servicer,
        executor,
        jobs,
        state,
        startup,
        metrics_server,
        own_provider,
        follower,
    )
    if wait_ready:
        await running.wait_ready()
    return running


def server_credentials(settings: Settings) -> Any:
    """TLS (or mutual TLS) credentials from the settings; None for plaintext, which is
    allowed on a loopback address, or elsewhere only with `insecure` (and a warning).

    :raises FailedPrecondition: plaintext on a non-loopback address without `insecure`.
    :raises InvalidArgument: a TLS file that cannot be read.
    """
    # The settings guarantee the certificate and key come as a pair, a client CA with them.
    if settings.security.tls_cert_file is None or settings.security.tls_key_file is None:
        if not _is_loopback(settings.server.host):
            if not settings.security.insecure:
                raise FailedPrecondition(
                    f"refusing to serve plaintext on {settings.server.host}: set tls_cert_file and "
                    "tls_key_file, bind a loopback address, or set insecure to allow it"
                )
            log.warning(
                "serving WITHOUT TLS on %s: anyone on the network can read and send calls",
                settings.server.host,
            )
        return None
    chain = _read_pem(settings.security.tls_cert_file, "tls_cert_file")
    key = _read_pem(settings.security.tls_key_file, "tls_key_file")
    client_ca = (
        _read_pem(settings.security.tls_client_ca_file, "tls_client_ca_file")
        if settings.security.tls_client_ca_file
        else None
    )
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _read_pem(path: Any, setting: str) -> bytes:
    try:
        data: bytes = path.read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"{setting}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN" not in data:
        raise InvalidArgument(f"{setting}: {path} is not a PEM file")
    return data


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


async def serve(settings: Settings, plugins: Plugins) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start_server(settings, plugins, wait_ready=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"edgetune listening on {settings.server.host}:{running.port}", flush=True)
    await stop.wait()
    log.info(
        "shutting down: draining in-flight calls for up to %.1fs", settings.server.shutdown_grace_s
    )
    await running.stop(settings.server.shutdown_grace_s, settings.server.shutdown_drain_delay_s)
