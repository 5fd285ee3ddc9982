"""The soak harness on the tiny model: load while a job trains and hot-swaps the model.

Checks what must hold however fast the machine is: no request fails, the swap happens
under load, and the server's file descriptors and threads come back to where they were
(a little slack: a thread pool may add a worker). Resident memory is reported, not
checked; no time is checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SLACK = 2


def test_soak_smoke(tmp_path: Path, tiny_bert: Path) -> None:
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "soak.py"),
            "--smoke",
            "--base",
            str(tiny_bert),
            "--concurrency",
            "4",
            "--think-ms",
            "20",
            "--json",
            str(out),
        ],
        # Sessions with 6 intra-op threads each: a model version left loaded after the
        # swap would leave 5 threads behind, more than the slack.
        env={**os.environ, "EDGETUNE_INTRA_OP_THREADS": "6", "EDGETUNE_TRAIN_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failed"] == 0, report["errors"]
    assert report["requests"] > 0
    assert report["job"]["state"] == "JOB_STATE_SUCCEEDED", report["job"]
    assert report["job"]["promoted"] and report["job"]["version"] == "2"
    assert set(report["versions_seen"]) == {"1", "2"}  # the swap happened under load
    assert report["clients_switched"] == report["clients"]
    start, end = report["server"]["start"], report["server"]["end"]
    assert end["fds"] <= start["fds"] + SLACK, report["server"]
    assert end["threads"] <= start["threads"] + SLACK, report["server"]
    assert result.returncode == 0, result.stdout[-3000:]
    assert "server rss_kib: start" in result.stdout
