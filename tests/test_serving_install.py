"""A serving-only install: the wheel without the train extra, in a fresh virtual
environment, serves models the full install built (fp32 and int8) and refuses fine-tuning
naming the extra to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from fakes import publish_copy

from edgetune.client import free_port, wait_until_serving
from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, server_pb2_grpc
from edgetune.v1 import server_pb2 as spb

ROOT = Path(__file__).resolve().parent.parent
TRAIN_PACKAGES = {"torch", "transformers", "optimum", "optimum-onnx", "onnx", "optuna"}


def run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}{result.stdout[-2000:]}"
    return result


@pytest.fixture(scope="module")
def serving_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from this checkout, installed with its required dependencies only."""
    where = tmp_path_factory.mktemp("serving-install")
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "-w", where / "dist", ROOT)  # fmt: skip
    (wheel,) = (where / "dist").glob("edgetune-*.whl")
    venv = where / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", wheel)
    return venv


def test_a_serving_only_install_serves_and_refuses_fine_tuning(
    serving_venv: Path, home: Path, tiny_bert: Path
) -> None:
    listed = run(serving_venv / "bin" / "python", "-m", "pip", "list", "--format", "json")
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert not installed & TRAIN_PACKAGES, installed & TRAIN_PACKAGES
    assert "onnxruntime" in installed

    # An int8 version beside the fp32 one, quantized by the full install (this process).
    from edgetune.exporters.quantize import quantize_dynamic

    repository = ModelRepository(home / "models")

    def quantize(staged: Path) -> None:
        quantize_dynamic(staged, "model.onnx", "model.q.onnx")
        (staged / "model.q.onnx").replace(staged / "model.onnx")

    publish_copy(repository, repository.resolve("tiny"), "tiny-int8", quantize, format="onnx-int8")

    edgetune = serving_venv / "bin" / "edgetune"
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "VIRTUAL_ENV"))
    } | {"EDGETUNE_HOME": str(home), "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1"}
    plugins = run(edgetune, "plugins", env=env)
    assert "capabilities: serving (no fine-tuning: pip install 'edgetune[train]'" in plugins.stdout
    imported = subprocess.run(
        [edgetune, "import-model", "--name", "x", "--task", "text-classification", str(tiny_bert)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert imported.returncode == 2
    assert "import-model needs the train extra" in imported.stderr

    port = free_port()
    server = subprocess.Popen([edgetune, "serve", "--port", str(port)], env=env)
    try:
        address = f"127.0.0.1:{port}"
        wait_until_serving(address, timeout=60, process=server)
        for model in ("tiny", "tiny-int8"):
            answer = run(edgetune, "predict", "--address", address, "--model", model,
                         "--json", "good fun", env=env)  # fmt: skip
            assert json.loads(answer.stdout)["label"] in {"negative", "neutral", "positive"}
        with grpc.insecure_channel(address) as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            with pytest.raises(grpc.RpcError) as refused:
                stub.CreateJob(
                    pb.CreateJobRequest(
                        task="text-classification",
                        base_path="anything",
                        examples=pb.Examples(examples=[pb.Example(text="x", label="a")]),
                        model_name="y",
                    ),
                    timeout=30,
                )
            info = server_pb2_grpc.ServerStub(channel).GetServerInfo(spb.GetServerInfoRequest())
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "fine-tuning needs the train extra" in refused.value.details()
        assert "pip install 'edgetune[train]'" in refused.value.details()
        assert list(info.capabilities) == ["serving"]
    finally:
        server.terminate()
        server.wait(30)
