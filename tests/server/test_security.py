"""Transport security (TLS, mutual TLS, plaintext only when asked) and bearer-token
authorization with scopes, over real gRPC on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import logging
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from edgetune.errors import FailedPrecondition, InvalidArgument
from edgetune.kserve import grpc_predict_v2_pb2 as v2
from edgetune.kserve import grpc_predict_v2_pb2_grpc as v2_grpc
from edgetune.plugins.token_auth import TokenStore
from edgetune.server.app import start_server
from edgetune.v1 import finetuning_pb2, finetuning_pb2_grpc, inference_pb2_grpc, models_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import models_pb2 as mpb

CLASSIFY = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])


# ---- a throw-away PKI ------------------------------------------------------------------


@dataclass(frozen=True)
class Pem:
    cert: Path
    key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(folder: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Pem:
    pem = Pem(folder / f"{name}.crt", folder / f"{name}.key")
    pem.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pem


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


@dataclass(frozen=True)
class Pki:
    ca: Pem
    server: Pem
    client: Pem
    rogue_client: Pem


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, and a client from another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key, rogue_key = _key(), _key()
    ca_cert = _certificate("edgetune test CA", ca_key, None, ca=True)
    rogue_cert = _certificate("rogue CA", rogue_key, None, ca=True)
    server_key, client_key, other_key = _key(), _key(), _key()
    return Pki(
        ca=_write(folder, "ca", ca_cert, ca_key),
        server=_write(
            folder,
            "server",
            _certificate("localhost", server_key, (ca_cert.subject, ca_key), server=True),
            server_key,
        ),
        client=_write(
            folder,
            "client",
            _certificate("client", client_key, (ca_cert.subject, ca_key)),
            client_key,
        ),
        rogue_client=_write(
            folder,
            "rogue",
            _certificate("client", other_key, (rogue_cert.subject, rogue_key)),
            other_key,
        ),
    )


# ---- helpers ---------------------------------------------------------------------------


@asynccontextmanager
async def running(settings, plugins) -> AsyncIterator[str]:
    server = await start_server(settings, plugins)
    try:
        yield f"127.0.0.1:{server.port}"
    finally:
        await server.stop(0)


def tls_channel(address: str, pki: Pki, client: Pem | None = None) -> aio.Channel:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.cert.read_bytes(),
        private_key=client.key.read_bytes() if client else None,
        certificate_chain=client.cert.read_bytes() if client else None,
    )
    return aio.secure_channel(address, credentials)


async def code_of(call) -> grpc.StatusCode:
    try:
        await call
    except aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


# ---- transport ---------------------------------------------------------------------------


async def test_tls_serves_only_tls_clients(settings, plugins, pki) -> None:
    settings = settings.replace(tls_cert_file=pki.server.cert, tls_key_file=pki.server.key)
    async with running(settings, plugins) as address:
        async with tls_channel(address, pki) as channel:
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(CLASSIFY)
            assert reply.results[0].labels
        async with aio.insecure_channel(address) as plain:
            stub = inference_pb2_grpc.InferenceStub(plain)
            assert await code_of(stub.Classify(CLASSIFY, timeout=5)) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_clients_without_a_certificate_from_the_ca(
    settings, plugins, pki
) -> None:
    settings = settings.replace(tls_cert_file=pki.server.cert, tls_key_file=pki.server.key)
    settings = settings.replace(tls_client_ca_file=pki.ca.cert)
    async with running(settings, plugins) as address:
        async with tls_channel(address, pki, pki.client) as channel:
            reply = await inference_pb2_grpc.InferenceStub(channel).Classify(CLASSIFY)
            assert reply.results[0].labels
        for client in (None, pki.rogue_client):
            async with tls_channel(address, pki, client) as channel:
                stub = inference_pb2_grpc.InferenceStub(channel)
                code = await code_of(stub.Classify(CLASSIFY, timeout=5))
                assert code == grpc.StatusCode.UNAVAILABLE, client


async def test_plaintext_off_loopback_needs_insecure_and_warns(settings, plugins, caplog) -> None:
    settings = settings.replace(host="0.0.0.0")
    with pytest.raises(FailedPrecondition, match=r"refusing to serve plaintext on 0\.0\.0\.0"):
        await start_server(settings, plugins)
    settings = settings.replace(insecure=True)
    with caplog.at_level(logging.WARNING, logger="edgetune.server.app"):
        server = await start_server(settings, plugins)
        await server.stop(0)
    assert any("WITHOUT TLS on 0.0.0.0" in r.getMessage() for r in caplog.records)


async def test_half_a_tls_configuration_is_refused(settings, plugins, pki, tmp_path) -> None:
    # The pair is a rule of the settings: refused before any server starts.
    with pytest.raises(InvalidArgument, match="both tls_cert_file and tls_key_file"):
        settings.replace(tls_cert_file=pki.server.cert)
    with pytest.raises(InvalidArgument, match="tls_client_ca_file needs tls_cert_file"):
        settings.replace(tls_client_ca_file=pki.ca.cert)
    settings = settings.replace(
        tls_cert_file=pki.server.cert, tls_key_file=tmp_path / "missing.key"
    )
    with pytest.raises(InvalidArgument, match="tls_key_file: cannot read"):
        await start_server(settings, plugins)


# ---- tokens and scopes -----------------------------------------------------------------


@pytest.fixture
def tokens(settings) -> dict[str, str]:
    store = TokenStore(settings.home)
    return {
        "reader": store.create("reader", ["infer"]),
        "trainer": store.create("trainer", ["finetune"]),
        "admin": store.create("admin", ["admin", "infer"]),
    }


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def test_tokens_are_stored_hashed(settings, tokens) -> None:
    stored = (settings.home / "auth" / "tokens.json").read_text()
    assert all(secret not in stored for secret in tokens.values())
    assert (settings.home / "auth" / "tokens.json").stat().st_mode & 0o077 == 0


async def test_each_method_needs_its_scope(settings, plugins, tokens) -> None:
    settings = settings.replace(auth="token")
    async with running(settings, plugins) as address, aio.insecure_channel(address) as channel:
        inference = inference_pb2_grpc.InferenceStub(channel)
        models = models_pb2_grpc.ModelsStub(channel)
        jobs = finetuning_pb2_grpc.FineTuningStub(channel)
        kserve = v2_grpc.GRPCInferenceServiceStub(channel)

        with pytest.raises(aio.AioRpcError) as missing:
            await inference.Classify(CLASSIFY)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "authorization: Bearer <token>" in missing.value.details()
        for wrong in (bearer("et_not-a-token"), (("authorization", "Basic abc"),)):
            with pytest.raises(aio.AioRpcError) as refused:
                await inference.Classify(CLASSIFY, metadata=wrong)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

        reader = bearer(tokens["reader"])
        assert (await inference.Classify(CLASSIFY, metadata=reader)).results
        assert (await models.ListModels(mpb.ListModelsRequest(), metadata=reader)).models
        with pytest.raises(aio.AioRpcError) as denied:
            await models.LoadModel(mpb.LoadModelRequest(name="tiny"), metadata=reader)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert denied.value.details() == (
            "token 'reader' lacks the scope 'admin' that /edgetune.v1.Models/LoadModel needs"
        )
        listing = jobs.ListJobs(finetuning_pb2.ListJobsRequest(), metadata=reader)
        assert await code_of(listing) == grpc.StatusCode.PERMISSION_DENIED
        watch = jobs.WatchJob(finetuning_pb2.WatchJobRequest(id="job_x"), metadata=reader)
        with pytest.raises(aio.AioRpcError) as streamed:
            async for _ in watch:
                pass
        assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED

        trainer = bearer(tokens["trainer"])
        listed = jobs.ListJobs(finetuning_pb2.ListJobsRequest(), metadata=trainer)
        assert await code_of(listed) == grpc.StatusCode.OK
        assert await code_of(inference.Classify(CLASSIFY, metadata=trainer)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        admin = bearer(tokens["admin"])
        loaded = await models.LoadModel(mpb.LoadModelRequest(name="tiny"), metadata=admin)
        assert loaded.state == mpb.MODEL_STATE_LOADED

        # The v2 protocol is checked the same way; liveness and readiness stay open.
        assert (await kserve.ServerLive(v2.ServerLiveRequest())).live
        assert (await kserve.ServerReady(v2.ServerReadyRequest())).ready
        ready = kserve.ModelReady(v2.ModelReadyRequest(name="tiny"))
        assert await code_of(ready) == grpc.StatusCode.UNAUTHENTICATED
        assert (await kserve.ModelReady(v2.ModelReadyRequest(name="tiny"), metadata=reader)).ready

        # Health and reflection stay open for probes and tooling.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for answer in stream:
            assert answer.list_services_response.service


async def test_a_revoked_token_stops_working_without_a_restart(settings, plugins, tokens) -> None:
    settings = settings.replace(auth="token")
    async with running(settings, plugins) as address, aio.insecure_channel(address) as channel:
        inference = inference_pb2_grpc.InferenceStub(channel)
        reader = bearer(tokens["reader"])
        assert (await inference.Classify(CLASSIFY, metadata=reader)).results
        TokenStore(settings.home).revoke("reader")
        with pytest.raises(aio.AioRpcError) as refused:
            await inference.Classify(CLASSIFY, metadata=reader)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        fresh = TokenStore(settings.home).create("late", ["infer"])
        assert (await inference.Classify(CLASSIFY, metadata=bearer(fresh))).results


async def test_a_revoked_token_stops_an_open_stream_at_its_next_message(
    settings, plugins, tokens
) -> None:
    settings = settings.replace(auth="token")
    async with running(settings, plugins) as address, aio.insecure_channel(address) as channel:
        stream = inference_pb2_grpc.InferenceStub(channel).ClassifyStream(
            metadata=bearer(tokens["reader"])
        )
        await stream.write(ipb.ClassifyStreamRequest(id="1", request=CLASSIFY))
        assert (await stream.read()).response.results
        TokenStore(settings.home).revoke("reader")
        await stream.write(ipb.ClassifyStreamRequest(id="2", request=CLASSIFY))
        with pytest.raises(aio.AioRpcError) as refused:
            await stream.read()  # no answer for id 2: the call ends
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in refused.value.details()


async def test_two_authorization_headers_are_refused(settings, plugins, tokens) -> None:
    settings = settings.replace(auth="token")
    async with running(settings, plugins) as address, aio.insecure_channel(address) as channel:
        inference = inference_pb2_grpc.InferenceStub(channel)
        both = bearer(tokens["reader"]) + bearer(tokens["reader"])
        with pytest.raises(aio.AioRpcError) as refused:
            await inference.Classify(CLASSIFY, metadata=both)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "one authorization header" in refused.value.details()


async def test_an_unknown_authenticator_stops_the_start(settings, plugins) -> None:
    settings = settings.replace(auth="kerberos")
    with pytest.raises(InvalidArgument, match=r"no authenticator named 'kerberos'.*token"):
        await start_server(settings, plugins)


def test_cli_tokens_and_a_tls_client_with_a_token(settings, pki, tmp_path) -> None:
    """`edgetune tokens create`, then `edgetune serve` with TLS and tokens, and
    `edgetune predict` with --tls-ca and --token (and refused without the token)."""
    from edgetune.client import free_port, open_channel

    home = settings.home
    env = {"EDGETUNE_HOME": str(home), "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1", "PATH": ""}
    cli = [sys.executable, "-m", "edgetune"]
    created = subprocess.run(
        [*cli, "tokens", "create", "ci", "--scopes", "infer"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    secret = created.stdout.strip().splitlines()[-1]
    assert secret.startswith("et_")
    listed = subprocess.run([*cli, "tokens", "list"], capture_output=True, text=True, env=env)
    assert "ci" in listed.stdout and secret not in listed.stdout

    port = free_port()
    server = subprocess.Popen(
        [
            *cli,
            "serve",
            "--port",
            str(port),
            "--tls-cert",
            str(pki.server.cert),
            "--tls-key",
            str(pki.server.key),
            "--auth",
            "token",
            "--log-level",
            "WARNING",
        ],
        env=env,
    )
    try:
        address = f"localhost:{port}"
        with open_channel(address, ca_file=pki.ca.cert) as channel:  # health stays open
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=60, wait_for_ready=True
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        predict = [*cli, "predict", "--address", address, "--model", "tiny", "--tls-ca"]
        ok = subprocess.run(
            [*predict, str(pki.ca.cert), "--token", secret, "good fun"],
            capture_output=True,
            text=True,
            env=env,
        )
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.strip()
        refused = subprocess.run(
            [*predict, str(pki.ca.cert), "good fun"], capture_output=True, text=True, env=env
        )
        assert refused.returncode == 1
        assert "UNAUTHENTICATED" in refused.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
