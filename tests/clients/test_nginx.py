"""Two replicas over one shared repository behind a real L7 gRPC proxy (Debian's nginx,
`grpc_pass`): a fine-tune through one replica is served by both through the proxy, and
with one replica killed the proxy's other replica keeps answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from client_tools import ROOT
from fakes import sentiment_rows

from edgetune.client import free_port, wait_until_serving
from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

sys.path.insert(0, str(ROOT / "bench"))
from scale_out import nginx_proxy  # the benchmark's proxy: the same nginx configuration

REQUEST = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])


@contextmanager
def replica(home: Path, shared: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`edgetune serve` with its own home over the shared repository, following it."""
    port = free_port()
    env = {
        **os.environ,
        "EDGETUNE_HOME": str(home),
        "EDGETUNE_REPOSITORY_DIR": str(shared),
        "EDGETUNE_REPOSITORY_POLL_S": "0.2",
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
        "EDGETUNE_TRAIN_THREADS": "1",
    }
    command = [sys.executable, "-m", "edgetune", "serve", "--port", str(port)]
    process = subprocess.Popen([*command, "--log-level", "WARNING"], env=env)
    try:
        wait_until_serving(f"127.0.0.1:{port}", timeout=120, process=process)
        yield f"127.0.0.1:{port}", process
    finally:
        process.kill()
        process.wait()


def answers(stub: inference_pb2_grpc.InferenceStub, count: int) -> list[str]:
    """The versions of count Classify answers, one call after another (any failure raises)."""
    return [stub.Classify(REQUEST, timeout=10).version for _ in range(count)]


def test_two_replicas_behind_nginx_serve_a_fine_tune_and_survive_a_kill(
    repository: ModelRepository, tmp_path: Path
) -> None:
    shared = repository.root  # the seeded repository: model "tiny" version 1
    proxy_root = tmp_path / "nginx"
    with (
        replica(tmp_path / "a", shared) as (first, _),
        replica(tmp_path / "b", shared) as (second, second_process),
        nginx_proxy(proxy_root, [first, second]) as proxy,
        grpc.insecure_channel(proxy) as channel,
        grpc.insecure_channel(first) as first_channel,
        grpc.insecure_channel(second) as second_channel,
    ):
        through_proxy = inference_pb2_grpc.InferenceStub(channel)
        assert set(answers(through_proxy, 10)) == {"1"}
        # Fine-tune through replica a only; it publishes version 2 to the shared repository
        # and promotes it; replica b follows the moved `latest` on its own.
        finetuning = finetuning_pb2_grpc.FineTuningStub(first_channel)
        job = finetuning.CreateJob(
            fpb.CreateJobRequest(
                task="text-classification",
                base_model=fpb.ModelRef(name="tiny"),
                examples=fpb.Examples(examples=[fpb.Example(**r) for r in sentiment_rows(40)]),
                model_name="tiny",
                auto_promote=True,
                hyperparameters=fpb.Hyperparameters(epochs=1, batch_size=8, max_length=32),
            ),
            timeout=60,
        )
        final = None
        for event in finetuning.WatchJob(fpb.WatchJobRequest(id=job.id), timeout=600):
            final = event
        done = finetuning.GetJob(fpb.GetJobRequest(id=job.id), timeout=10)
        assert done.state == fpb.JOB_STATE_SUCCEEDED and done.result.promoted, (
            done.error,
            final,
        )
        published = time.monotonic()
        # Traffic through the proxy until both replicas answer version 2 (bounded: 60 s,
        # 5,000 calls); every call must succeed.
        seen: list[str] = []
        direct_b = inference_pb2_grpc.InferenceStub(second_channel)
        while time.monotonic() - published < 60 and len(seen) < 5000:
            seen += answers(through_proxy, 2)
            if direct_b.Classify(REQUEST, timeout=10).version == "2":
                break
        print(f"replica b served version 2 {time.monotonic() - published:.2f} s after the publish")
        assert direct_b.Classify(REQUEST, timeout=10).version == "2"
        direct_a = inference_pb2_grpc.InferenceStub(first_channel)
        assert direct_a.Classify(REQUEST, timeout=10).version == "2"
        # Until b followed, round robin alternated a's version 2 with b's version 1; now
        # both answer version 2.
        assert set(seen) <= {"1", "2"}
        assert set(answers(through_proxy, 20)) == {"2"}

        second_process.send_signal(signal.SIGKILL)
        second_process.wait()
        # nginx finds replica b refusing connections and passes each call to replica a.
        assert set(answers(through_proxy, 20)) == {"2"}
