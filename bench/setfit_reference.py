"""The setfit library's own few-shot result, as the reference for `bench/fewshot.py --setfit`.

Run by the separate venv .bench-venvs/setfit (setfit 1.2.0 and its CPU torch; fewshot.py
builds it), not by the project's venv:

    .bench-venvs/setfit/bin/python bench/setfit_reference.py IN.json OUT.json

IN.json: {"base": the all-MiniLM-L6-v2 folder, "seeds": [{"seed": 0, "rows": [{"text",
"label"}, ...]}, ...], "held_out": [{"text", "label"}, ...]}. For each seed: setfit with
its defaults (SetFitModel.from_pretrained on the local folder, so a LogisticRegression
head; Trainer and TrainingArguments as they come) but for the seed and 128 tokens per
text, then a prediction of every held-out text. OUT.json: {"versions": {...}, "runs":
[{"seed", "accuracy", "seconds"}, ...]}, seconds being Trainer.train() alone (loading the
base and predicting not counted). Offline: nothing is fetched from a hub.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import datasets
import sentence_transformers
import setfit
import torch
import transformers

MAX_TOKENS = 128
"""Tokens per text, as edgetune's contrastive stage. setfit's TrainingArguments.max_length
reaches only the differentiable head's tokenizer: the embedding stage and the default
LogisticRegression head encode at the body's max_seq_length (256 in this base's
sentence_bert_config.json), so that is what is set."""


def run(base: str, seed: int, rows: list[dict[str, str]], held_out: list[dict[str, str]]) -> dict:
    """Train setfit on rows with seed and score it on held_out: {"seed", "accuracy",
    "seconds"}."""
    model = setfit.SetFitModel.from_pretrained(base)
    model.model_body.max_seq_length = MAX_TOKENS
    with tempfile.TemporaryDirectory() as checkpoints:
        # output_dir only keeps the checkpoints out of the working directory
        args = setfit.TrainingArguments(output_dir=checkpoints, seed=seed)
        trainer = setfit.Trainer(
            model=model, args=args, train_dataset=datasets.Dataset.from_list(rows)
        )
        started = time.monotonic()
        trainer.train()
        seconds = time.monotonic() - started
    predicted = model.predict([r["text"] for r in held_out], show_progress_bar=False)
    right = sum(p == r["label"] for p, r in zip(predicted, held_out, strict=True))
    return {"seed": seed, "accuracy": right / len(held_out), "seconds": seconds}


def main() -> None:
    """Read IN.json, train and score each seed, write OUT.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    spec = json.loads(args.input.read_text())
    runs = []
    for entry in spec["seeds"]:
        result = run(spec["base"], entry["seed"], entry["rows"], spec["held_out"])
        runs.append(result)
        print(f"setfit seed {result['seed']}: accuracy {result['accuracy']:.4f}, "
              f"trained in {result['seconds']:.1f} s", flush=True)  # fmt: skip
    versions = {
        module.__name__: module.__version__
        for module in (setfit, sentence_transformers, transformers, datasets, torch)
    }
    args.output.write_text(json.dumps({"versions": versions, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
