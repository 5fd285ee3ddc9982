"""The benchmark harness runs end to end on the tiny model (a smoke run: no figure is checked)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_benchmark_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "serving.py"),
            "--smoke",
            "--base",
            str(tiny_bert),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {
        "onnxruntime fp32",
        "onnxruntime int8",
        "onnxruntime int8-fused",
        "edgetune fp32",
        "edgetune int8",
        "edgetune int8-fused",
    }
    served = figures["edgetune int8"]
    assert {
        "short_batch1",
        "long_batch1",
        "short_stream_batch1",
        "short_c8_items_per_s",
        "short_c32_items_per_s",
    } <= set(served)
    assert "edgetune/raw p50" in result.stdout


def test_static_int8_benchmark_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "static.json"
    command = [sys.executable, str(ROOT / "bench" / "static_int8.py"), "--base", str(tiny_bert)]
    command += ["--calibration", "4", "--articles", "4", "--requests", "5", "--json", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures) == {
        "fp32 fused",
        "dynamic int8 (published)",
        "static int8 QDQ",
        "static int8 QOperator",
    }
    assert figures["fp32 fused"]["agreement"] == 1.0
    assert all(f["short_b32_per_s"] > 0 for f in figures.values())
    assert "static int8 QDQ / dynamic" in result.stdout


def test_operating_benchmark_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "operating.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "operating.py"),
            "--smoke",
            "--base",
            str(tiny_bert),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["overhead"]["medians"]) == {"plain", "metrics+log"}
    assert figures["overhead"]["request_log_lines"] > 0  # the log was on and written
    assert set(figures["launch_to_ready_s"]) == {"all", "lazy"}
    assert set(figures["per_call_us"]) == {"off", "metrics", "log", "metrics+log"}
    assert "metrics+log / plain" in result.stdout


def test_k6_load_test_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    """k6 drives the server for a few seconds; every request must be answered OK."""
    out = tmp_path / "load.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "load_test.py"),
            "--base",
            str(tiny_bert),
            "--vus",
            "2",
            "--duration",
            "3s",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["iterations"]["count"] > 0
    assert metrics["checks"]["fails"] == 0


def test_scale_out_benchmark_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "scale-out.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "scale_out.py"),
            "--smoke",
            "--base",
            str(tiny_bert),
            "--poll",
            "0.5",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["failed"] == 0 and figures["requests"] > 0
    assert len(figures["follow_s"]) == 1 and len(figures["follow_s"][0]) == 2  # two replicas


def test_latency_benchmark_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    """k6 drives v2 ModelInfer and ServerLive at 1, 8 and 32 users next to the floor."""
    out = tmp_path / "latency.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "latency.py"),
            "--smoke",
            "--base",
            str(tiny_bert),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    figures = json.loads(out.read_text())
    served = figures["served"]
    assert {f"{rpc}_c{n}" for rpc in ("live", "infer") for n in (1, 8, 32)} < set(served)
    assert {"infer_mixed_c8", "infer_mixed_c8_padded"} < set(served)
    assert figures["floor"]["mixed_batch8_split_items_per_s"] > 0
    assert all(row["calls"] > 0 and row["failed"] == 0 for row in served.values())
    assert set(figures["stages"]) == {"c1", "c32", "long_c1"}
    assert all(0.0 <= stage["inline_share"] <= 1.0 for stage in figures["stages"].values())
    assert figures["stages"]["c32"]["request_ms"] > figures["stages"]["c32"]["inference_ms"]
    assert "1 caller p50 <= floor + 1.25 x null-RPC p50" in result.stdout
