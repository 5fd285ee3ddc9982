"""The Kubernetes and KServe manifests in deploy/, checked without a cluster.

- KServe objects against the openAPIV3 schemas of KServe's CRDs (vendored in
  deploy/kserve/schemas/), made strict: a CRD schema sets no `additionalProperties` on its
  objects, so the API server drops (prunes) a misspelt field instead of refusing it; here an
  unknown field is an error.
- The plain Deployment's containers and volumes against the core/v1 Container and Volume
  schemas those CRDs embed, its other fields and the Services by a structural check.
- Against the code: every EDGETUNE_* name is a real setting, the values load as Settings,
  the container port, the probes and the Prometheus port and path are what those settings
  make the server serve, and a server started from them answers there.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import importlib.util
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from jsonschema import Draft7Validator

from edgetune.client import free_port
from edgetune.kserve import grpc_predict_v2_pb2 as v2
from edgetune.kserve import grpc_predict_v2_pb2_grpc as v2_grpc
from edgetune.server.app import start_server
from edgetune.settings import ENV_PREFIX, FIELD_GROUPS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "kserve" / "schemas"
METRICS_PATH = "/metrics"  # what edgetune.server.telemetry serves (prometheus-client)
SETTING_NAMES = {f"{ENV_PREFIX}HOME"} | {f"{ENV_PREFIX}{f.upper()}" for f in FIELD_GROUPS}
# Ports Knative's queue-proxy and KServe's agent and metrics aggregation take in the pod.
RESERVED_PORTS = {8012, 8013, 8022, 9081, 9088, 9090, 9091}
# Fields KServe's predictor adds to the core/v1 PodSpec it embeds.
KSERVE_PREDICTOR_ONLY = {
    "annotations", "autoScaling", "batcher", "canaryTrafficPercent", "containerConcurrency",
    "deploymentStrategy", "huggingface", "labels", "lightgbm", "logger", "maxReplicas",
    "minReplicas", "model", "onnx", "paddle", "pmml", "pytorch", "scaleMetric",
    "scaleMetricType", "scaleTarget", "sklearn", "storageContainerName", "storageUris",
    "tensorflow", "timeout", "triton", "workerSpec", "xgboost",
}  # fmt: skip
# metadata is `type: object` in a CRD schema (the API server checks it): the fields used here.
OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def load_documents() -> list[tuple[str, dict[str, Any]]]:
    """(file relative to deploy/, object) of every YAML document under deploy/."""
    documents = []
    for path in sorted(DEPLOY.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                documents.append((str(path.relative_to(DEPLOY)), doc))
    return documents


DOCUMENTS = load_documents()


def the(kind: str, folder: str | None = None) -> dict[str, Any]:
    """The one object of this kind (in deploy/<folder>/)."""
    found = [
        doc
        for name, doc in DOCUMENTS
        if doc["kind"] == kind and (folder is None or name.startswith(folder + "/"))
    ]
    assert len(found) == 1, f"{len(found)} {kind} objects"
    return found[0]


def read_schema(stem: str) -> dict[str, Any]:
    plain, packed = SCHEMAS / f"{stem}.json", SCHEMAS / f"{stem}.json.gz"
    data = plain.read_bytes() if plain.exists() else gzip.decompress(packed.read_bytes())
    schema: dict[str, Any] = json.loads(data)
    return schema


CRD_SCHEMAS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): read_schema("servingruntime.v1alpha1"),
    ("serving.kserve.io/v1beta1", "InferenceService"): read_schema("inferenceservice.v1beta1"),
}


def strict(schema: Any) -> Any:
    """The schema as the tests apply it: without the x-kubernetes-* extensions, and every
    object that lists its properties (and does not preserve unknown fields) refusing others."""
    if isinstance(schema, list):
        return [strict(sub) for sub in schema]
    if not isinstance(schema, dict):
        return schema
    out = {
        key: ({k: strict(v) for k, v in value.items()} if key == "properties" else strict(value))
        for key, value in schema.items()
        if not key.startswith("x-kubernetes-")
    }
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def strict_crd(schema: dict[str, Any]) -> dict[str, Any]:
    """strict(), with the metadata fields the manifests may use."""
    out: dict[str, Any] = strict(schema)
    out["properties"]["metadata"] = OBJECT_META
    return out


STRICT = {key: Draft7Validator(strict_crd(schema)) for key, schema in CRD_SCHEMAS.items()}
PREDICTOR = CRD_SCHEMAS[("serving.kserve.io/v1beta1", "InferenceService")]["properties"]["spec"][
    "properties"
]["predictor"]
POD_SPEC = strict(
    {
        **PREDICTOR,
        "properties": {
            k: v for k, v in PREDICTOR["properties"].items() if k not in KSERVE_PREDICTOR_ONLY
        },
    }
)
POD_SPEC["required"] = ["containers"]
POD_SPEC_VALIDATOR = Draft7Validator(POD_SPEC)


def schema_errors(validator: Draft7Validator, instance: Any) -> list[str]:
    """Each error as `path: message`."""
    return sorted(
        f"{'.'.join(str(p) for p in error.absolute_path) or '<root>'}: {error.message}"
        for error in validator.iter_errors(instance)
    )


def crd_errors(doc: dict[str, Any]) -> list[str]:
    return schema_errors(STRICT[(doc["apiVersion"], doc["kind"])], doc)


# -- KServe objects against the CRD schemas ---------------------------------------------------


def test_every_manifest_is_a_known_kind() -> None:
    kinds = sorted((name, doc["apiVersion"], doc["kind"]) for name, doc in DOCUMENTS)
    assert kinds == [
        ("kserve/inferenceservice.yaml", "serving.kserve.io/v1beta1", "InferenceService"),
        ("kserve/s3-secret.yaml", "v1", "Secret"),
        ("kserve/servingruntime.yaml", "serving.kserve.io/v1alpha1", "ServingRuntime"),
        ("kubernetes/deployment.yaml", "apps/v1", "Deployment"),
        ("kubernetes/s3-secret.yaml", "v1", "Secret"),
        ("kubernetes/service.yaml", "v1", "Service"),
        ("kubernetes/service.yaml", "v1", "Service"),
    ]


@pytest.mark.parametrize("kind", ["ServingRuntime", "InferenceService"])
def test_kserve_objects_match_the_crd_schema(kind: str) -> None:
    assert crd_errors(the(kind)) == []


def _runtime_container(doc: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = doc["spec"]["containers"][0]
    return container


BROKEN = [
    # (kind, change to a copy, a word the error names)
    ("ServingRuntime", lambda d: d["spec"].__setitem__("protocolVersion", ["grpc-v2"]), "protocolVersion"),
    ("ServingRuntime", lambda d: _runtime_container(d).__setitem__("readinesProbe", {}), "readinesProbe"),
    ("ServingRuntime", lambda d: _runtime_container(d)["ports"][0].__setitem__("containerPort", "50051"), "containerPort"),
    ("ServingRuntime", lambda d: _runtime_container(d)["readinessProbe"]["grpc"].__setitem__("prot", 1), "prot"),
    ("ServingRuntime", lambda d: _runtime_container(d)["resources"]["requests"].__setitem__("cpu", "two"), "two"),
    ("ServingRuntime", lambda d: d["metadata"].__setitem__("annotation", {}), "annotation"),
    ("InferenceService", lambda d: d["spec"]["predictor"]["model"].__setitem__("storageURI", "s3://x/y"), "storageURI"),
    ("InferenceService", lambda d: d["spec"]["predictor"].__setitem__("minReplica", 2), "minReplica"),
    ("InferenceService", lambda d: d["spec"]["predictor"]["model"]["env"][0].__setitem__("valu", "x"), "valu"),
    ("InferenceService", lambda d: d["spec"]["predictor"]["model"]["modelFormat"].pop("name"), "name"),
    ("ServingRuntime", lambda d: d["spec"]["supportedModelFormats"][0].__setitem__("priority", 0), "minimum"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "change", "word"), BROKEN)
def test_a_broken_copy_fails_the_schema(kind: str, change: Any, word: str) -> None:
    broken = copy.deepcopy(the(kind))
    change(broken)
    errors = crd_errors(broken)
    assert errors, f"{word}: accepted"
    assert any(word in error for error in errors), errors


def test_the_crd_schemas_prune_rather_than_refuse_unknown_fields() -> None:
    """Why strict() is needed: as the CRD has it, the schema accepts a misspelt field."""
    key = ("serving.kserve.io/v1alpha1", "ServingRuntime")
    broken = copy.deepcopy(the("ServingRuntime"))
    _runtime_container(broken)["readinesProbe"] = {}
    raw = {k: v for k, v in CRD_SCHEMAS[key].items() if k != "x-kubernetes-preserve-unknown-fields"}
    assert Draft7Validator(raw).is_valid(broken)
    assert not STRICT[key].is_valid(broken)


def test_the_vendored_schemas_name_their_source() -> None:
    source = (SCHEMAS / "SOURCE.md").read_text(encoding="utf-8")
    assert "aaac4e294dae2c7b1aa1886447793f3aa1c30912" in source
    assert "Apache License" in (SCHEMAS / "LICENSE").read_text(encoding="utf-8")
    for stem in ("servingruntime.v1alpha1", "inferenceservice.v1beta1"):
        assert stem in source


def vendoring_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "vendor_kserve_schemas", ROOT / "scripts" / "vendor_kserve_schemas.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_vendoring_script_makes_the_vendored_files_again(tmp_path: Path) -> None:
    """A CRD holding a vendored schema comes out as the same bytes (format, gzip header)."""
    script = vendoring_script()
    for (api_version, kind), schema in CRD_SCHEMAS.items():
        version = api_version.rpartition("/")[2]
        crd = {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "spec": {
                "names": {"kind": kind},
                "versions": [
                    {"name": version, "served": True, "schema": {"openAPIV3Schema": schema}},
                    {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {}}},
                ],
            },
        }
        source = tmp_path / f"{kind}.yaml"
        source.write_text(json.dumps(crd), encoding="utf-8")  # JSON is YAML
        (written,) = script.extract(source, tmp_path)
        assert written.read_bytes() == (SCHEMAS / written.name).read_bytes()


def test_the_vendoring_script_drops_descriptions_only() -> None:
    schema = {
        "description": "doc",
        "type": "object",
        "properties": {"description": {"type": "string", "description": "doc"}},
        "anyOf": [{"description": "doc", "type": "string"}],
        "items": {"description": "doc", "pattern": "^a$"},
    }
    assert vendoring_script().strip_descriptions(schema) == {
        "type": "object",
        "properties": {"description": {"type": "string"}},
        "anyOf": [{"type": "string"}],
        "items": {"pattern": "^a$"},
    }


# -- The KServe objects together --------------------------------------------------------------


def test_the_inference_service_selects_the_runtime() -> None:
    runtime, service = the("ServingRuntime"), the("InferenceService")
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    formats = runtime["spec"]["supportedModelFormats"]
    assert any(
        f["name"] == model["modelFormat"]["name"]
        and f.get("version") == model["modelFormat"].get("version")
        for f in formats
    )
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    # edgetune speaks the v2 protocol over gRPC only (no REST endpoint): claim nothing else.
    assert runtime["spec"]["protocolVersions"] == ["grpc-v2"]
    # The model is found through edgetune's repository_url, not KServe's storage initializer.
    assert "storageUri" not in model and "storage" not in model
    assert "EDGETUNE_REPOSITORY_URL" in env_values(model)


def test_the_runtime_container_has_one_h2c_port_and_free_metrics_port() -> None:
    runtime = the("ServingRuntime")
    (container,) = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    (port,) = container["ports"]  # Knative allows one port per container
    assert port["name"] == "h2c"
    metrics = int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])
    assert {port["containerPort"], metrics}.isdisjoint(RESERVED_PORTS)
    assert port["containerPort"] != metrics


# -- Env names and values against edgetune.settings -------------------------------------------


def containers() -> list[tuple[str, dict[str, Any]]]:
    """(where, container) of every container in the manifests."""
    found = []
    for name, doc in DOCUMENTS:
        if doc["kind"] == "ServingRuntime":
            found += [(name, c) for c in doc["spec"]["containers"]]
        elif doc["kind"] == "InferenceService":
            found.append((name, doc["spec"]["predictor"]["model"]))
        elif doc["kind"] == "Deployment":
            found += [(name, c) for c in doc["spec"]["template"]["spec"]["containers"]]
    return found


def unknown_settings(container: dict[str, Any]) -> list[str]:
    """EDGETUNE_* names in a container's env that are no setting of edgetune."""
    names = [entry["name"] for entry in container.get("env", [])]
    return [n for n in names if n.startswith(ENV_PREFIX) and n not in SETTING_NAMES]


@pytest.mark.parametrize(
    ("where", "container"),
    containers(),
    ids=[f"{where}:{container.get('name', 'model')}" for where, container in containers()],
)
def test_every_edgetune_variable_is_a_setting(where: str, container: dict[str, Any]) -> None:
    assert unknown_settings(container) == []
    names = [entry["name"] for entry in container.get("env", [])]
    assert len(names) == len(set(names)), f"{where}: a variable twice"


def test_a_misspelt_setting_is_caught() -> None:
    assert "EDGETUNE_METRICS_PORT" in SETTING_NAMES
    container = {"env": [{"name": "EDGETUNE_METRIC_PORT", "value": "8082"}]}
    assert unknown_settings(container) == ["EDGETUNE_METRIC_PORT"]


def env_values(container: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom object, of a container's env."""
    return {e["name"]: e["value"] if "value" in e else e["valueFrom"] for e in container["env"]}


def kserve_env() -> dict[str, Any]:
    """The kserve-container's env as KServe merges it: the runtime's, the model's over it."""
    return env_values(_runtime_container(the("ServingRuntime"))) | env_values(
        the("InferenceService")["spec"]["predictor"]["model"]
    )


def deployment_container() -> dict[str, Any]:
    (container,) = the("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def test_the_deployment_has_the_kserve_env() -> None:
    assert env_values(deployment_container()) == kserve_env()


def settings_from(env: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as `edgetune serve` reads them in the container: from these variables only."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        if name.startswith(ENV_PREFIX):
            assert isinstance(value, str), f"{name} is not a literal value"
            monkeypatch.setenv(name, value)
    return load_settings()


def cpu_cores(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def check_workload(
    settings: Settings,
    container: dict[str, Any],
    grpc_port: dict[str, Any],
    metrics_port: str,
    metrics_path: str,
    grace_s: int,
) -> None:
    """What a pod of this container needs from the settings it runs with."""
    port = settings.server.port
    assert grpc_port["containerPort"] == port
    assert container["readinessProbe"]["grpc"]["port"] in (port, grpc_port["name"])
    assert container["readinessProbe"]["grpc"].get("service", "") == ""  # the whole server
    assert container["livenessProbe"]["tcpSocket"]["port"] in (port, grpc_port["name"])
    assert "grpc" not in container["livenessProbe"]  # NOT_SERVING while models load
    assert int(metrics_port) == settings.observability.metrics_port != 0
    assert metrics_path == METRICS_PATH
    # Reachable from other pods: every address, and plaintext allowed there (else the
    # server refuses to start).
    assert settings.server.host == "0.0.0.0"
    assert settings.security.insecure
    assert settings.runtime.model_control == "pinned"
    assert settings.runtime.pinned_models
    assert settings.runtime.repository_url.startswith("s3://")
    assert settings.runtime.repository_poll_s > 0
    assert settings.home == Path(container["volumeMounts"][0]["mountPath"])
    cores = cpu_cores(container["resources"]["requests"]["cpu"])
    for threads in (
        settings.runtime.intra_op_threads,
        settings.runtime.inference_workers,
        settings.training.train_threads,
    ):
        assert 0 < threads <= cores
    assert grace_s > settings.server.shutdown_drain_delay_s + settings.server.shutdown_grace_s
    assert "memory" in container["resources"]["requests"]


def test_the_kserve_pod_runs_with_what_the_server_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, service = the("ServingRuntime"), the("InferenceService")
    container = _runtime_container(runtime)
    check_workload(
        settings_from(kserve_env(), monkeypatch),
        container,
        container["ports"][0],
        runtime["spec"]["annotations"]["prometheus.kserve.io/port"],
        runtime["spec"]["annotations"]["prometheus.kserve.io/path"],
        service["spec"]["predictor"]["terminationGracePeriodSeconds"],
    )
    annotations = service["metadata"]["annotations"]
    assert annotations["serving.kserve.io/enable-prometheus-scraping"] == "true"
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"


def test_the_deployment_runs_with_what_the_server_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = the("Deployment")["spec"]["template"]
    container = deployment_container()
    ports = {p["name"]: p for p in container["ports"]}
    check_workload(
        settings_from(env_values(container), monkeypatch),
        container,
        ports["grpc"],
        pod["metadata"]["annotations"]["prometheus.io/port"],
        pod["metadata"]["annotations"]["prometheus.io/path"],
        pod["spec"]["terminationGracePeriodSeconds"],
    )
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert ports["metrics"]["containerPort"] == int(
        pod["metadata"]["annotations"]["prometheus.io/port"]
    )


# -- The plain Deployment and Services --------------------------------------------------------

DEPLOYMENT_SPEC = {
    "replicas", "selector", "template", "strategy", "minReadySeconds",
    "revisionHistoryLimit", "progressDeadlineSeconds", "paused",
}  # fmt: skip
SERVICE_SPEC = {"type", "selector", "ports", "clusterIP", "sessionAffinity", "ipFamilyPolicy"}
SERVICE_PORT = {"name", "port", "targetPort", "protocol", "appProtocol", "nodePort"}
SECRET = {"apiVersion", "kind", "metadata", "type", "stringData", "data", "immutable"}


def structure_errors(doc: dict[str, Any]) -> list[str]:
    """Unknown fields and missing essentials of a Deployment, a Service or a Secret; the pod
    spec of a Deployment against the core/v1 PodSpec schema (as KServe's CRD embeds it)."""
    errors = [
        f"metadata: {e}" for e in schema_errors(Draft7Validator(OBJECT_META), doc["metadata"])
    ]
    if doc["kind"] == "Secret":
        errors += [f"unknown field {k}" for k in set(doc) - SECRET]
        data = doc.get("stringData", {})
        errors += [
            f"stringData.{k}: not a string" for k, v in data.items() if not isinstance(v, str)
        ]
        return errors
    errors += [f"unknown field {k}" for k in set(doc) - {"apiVersion", "kind", "metadata", "spec"}]
    spec = doc["spec"]
    if doc["kind"] == "Deployment":
        errors += [f"spec: unknown field {k}" for k in set(spec) - DEPLOYMENT_SPEC]
        template = spec["template"]
        errors += [f"template: unknown field {k}" for k in set(template) - {"metadata", "spec"}]
        errors += [f"template.metadata: {e}" for e in schema_errors(
            Draft7Validator({**OBJECT_META, "required": []}), template["metadata"]
        )]  # fmt: skip
        errors += [
            f"template.spec.{e}" for e in schema_errors(POD_SPEC_VALIDATOR, template["spec"])
        ]
        if set(spec["selector"]) != {"matchLabels"}:
            errors.append("selector: matchLabels only")
        elif spec["selector"]["matchLabels"].items() > template["metadata"]["labels"].items():
            errors.append("selector: does not match the template's labels")
    elif doc["kind"] == "Service":
        errors += [f"spec: unknown field {k}" for k in set(spec) - SERVICE_SPEC]
        for port in spec["ports"]:
            errors += [f"ports: unknown field {k}" for k in set(port) - SERVICE_PORT]
    return errors


@pytest.mark.parametrize("kind", ["Deployment", "Service", "Secret"])
def test_the_plain_kubernetes_objects_are_well_formed(kind: str) -> None:
    docs = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert docs
    for doc in docs:
        assert structure_errors(doc) == [], doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("change", "word"),
    [
        (lambda d: d["spec"].__setitem__("replica", 2), "replica"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("readinesProbe", {}), "readinesProbe"),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["env"][0].__setitem__("value", 1), "1 is not of type"),
        (lambda d: d["spec"]["template"]["spec"].__setitem__("minReplicas", 2), "minReplicas"),
        (lambda d: d["spec"]["template"]["spec"]["volumes"][0].__setitem__("emptydir", {}), "emptydir"),
        (lambda d: d["spec"]["selector"]["matchLabels"].__setitem__("app", "other"), "selector"),
    ],
)  # fmt: skip
def test_a_broken_deployment_fails(change: Any, word: str) -> None:
    broken = copy.deepcopy(the("Deployment"))
    change(broken)
    errors = structure_errors(broken)
    assert any(word in error for error in errors), errors


def test_the_deployment_and_services_fit_together() -> None:
    deployment = the("Deployment")
    assert deployment["spec"]["replicas"] == 2
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    container = deployment_container()
    assert container["readinessProbe"] and container["resources"]["requests"]
    port_names = {p["name"] for p in container["ports"]}
    services = [doc for _, doc in DOCUMENTS if doc["kind"] == "Service"]
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in port_names
            if port["name"] == "grpc":
                assert port["appProtocol"] == "kubernetes.io/h2c"


@pytest.mark.parametrize("folder", ["kserve", "kubernetes"])
def test_referenced_secret_keys_exist_beside_the_manifests(folder: str) -> None:
    secret = the("Secret", folder)
    for name, container in containers():
        if not name.startswith(folder + "/"):
            continue
        for entry in container.get("env", []):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref is None:
                continue
            assert ref["name"] == secret["metadata"]["name"]
            assert ref["key"] in secret["stringData"] or ref.get("optional"), ref["key"]


# -- A server started with the manifests' settings answers where they say --------------------


async def test_a_server_with_the_manifest_settings_answers_the_probes_and_scrape(
    tmp_path: Path, plugins: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Deployment's settings, but on loopback, free ports, a local empty repository and no
    pinned model (nothing to pin in it), so the paths and services are checked, not S3."""
    container = deployment_container()
    pod = the("Deployment")["spec"]["template"]
    settings = settings_from(env_values(container), monkeypatch).replace(
        home=tmp_path,
        host="127.0.0.1",
        port=free_port(),
        metrics_port=free_port(),
        repository_url="",
        pinned_models=[],
        disable_plugin_autoload=True,
    )
    running = await start_server(settings, plugins)
    try:
        # livenessProbe: the port takes TCP connections.
        await asyncio.to_thread(socket.create_connection, ("127.0.0.1", running.port), 5)
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            service = container["readinessProbe"]["grpc"].get("service", "")
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service)
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            assert (await stub.ServerLive(v2.ServerLiveRequest())).live
            assert (await stub.ServerReady(v2.ServerReadyRequest())).ready
        url = f"http://127.0.0.1:{running.metrics_port}{pod['metadata']['annotations']['prometheus.io/path']}"

        def scrape() -> tuple[int, str]:
            with urllib.request.urlopen(url, timeout=10) as reply:
                return reply.status, reply.read().decode()

        status, text = await asyncio.to_thread(scrape)
        assert status == 200
        assert "edgetune_models_loaded" in text
    finally:
        await running.stop(0)
