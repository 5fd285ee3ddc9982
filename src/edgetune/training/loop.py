"""The PyTorch training loop: AdamW with linear warm-up, evaluation every epoch, the best
checkpoint kept, early stopping. Task-agnostic: the task supplies model, features,
collation and metrics."""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader
from transformers import get_linear_schedule_with_warmup

from edgetune.task import IGNORE_INDEX, Task, pad_to_longest
from edgetune.training.jobstore import Checkpoint
from edgetune.training.spec import Hyperparameters

log = logging.getLogger(__name__)

PROGRESS_EVERY_S = 2.0


class Cancelled(Exception):
    """Raised inside the loop when the job was cancelled."""


@dataclass(slots=True)
class Progress:
    """A progress report."""

    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    eta_seconds: float
    examples_per_second: float
    trial: int = 0
    """The search trial this is (from 1); 0 outside a search."""
    trials: int = 0
    """Trials the search may run; 0 outside a search."""


class Reporter:
    """Where the loop reports; the job process writes these to the job store."""

    def progress(self, progress: Progress) -> None:
        """Training progress, every few seconds."""

    def evaluated(self, epoch: int, metrics: dict[str, float], best: bool) -> None:
        """Validation metrics after an epoch."""

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        """A checkpoint was saved."""

    def checkpoint_removed(self, epoch: int) -> None:
        """A checkpoint was deleted (superseded)."""


@dataclass(slots=True)
class Outcome:
    """How training ended."""

    best: Checkpoint
    stopped_early: bool
    last: Checkpoint
    """The last epoch's checkpoint (what a retraining on all rows publishes)."""


def evaluate(
    model: Any, task: Task, loader: DataLoader[Any], labels: Sequence[str]
) -> dict[str, float]:
    """The task's metrics of a torch model on a loader, plus the mean validation "loss".

    Batches of per-token outputs differ in length; they are padded to the longest (targets
    with `IGNORE_INDEX`) before they are joined.
    """
    model.eval()
    logits, targets, losses = [], [], []
    with torch.inference_mode():
        for batch in loader:
            output = model(**batch)
            logits.append(output.logits.float().numpy())
            targets.append(batch["labels"].numpy())
            losses.append(float(output.loss) * len(batch["labels"]))
    model.train()
    metrics = task.compute_metrics(
        np.concatenate(pad_to_longest(logits, 0, from_axis=1)),
        np.concatenate(pad_to_longest(targets, IGNORE_INDEX, from_axis=1)),
        labels,
    )
    metrics["loss"] = sum(losses) / sum(len(t) for t in targets)
    return metrics


def rank(task: Task, metrics: dict[str, float]) -> tuple[float, float]:
    """Sort key of a checkpoint: the task's selection metric, then (for the ties common on
    small validation sets) the lower validation loss."""
    return metrics[task.selection_metric], -metrics.get("loss", 0.0)


def train(
    task: Task,
    model: Any,
    collate: Callable[[list[dict[str, Any]]], Any],
    train_features: list[dict[str, Any]],
    validation_features: list[dict[str, Any]],
    labels: Sequence[str],
    hp: Hyperparameters,
    workdir: Path,
    reporter: Reporter,
    cancelled: Callable[[], bool],
    *,
    resume: Checkpoint | None = None,
    best: Checkpoint | None = None,
) -> Outcome:
    """Train, evaluate each epoch, keep the best and the last checkpoint.

    :param resume: the last checkpoint of an interrupted run: training goes on from the
        epoch after it (its weights are already in `model`; optimizer moments restart).
    :param best: the best checkpoint of an interrupted run.
    """
    torch.manual_seed(hp.seed)
    if resume is None:  # a resumed model already has what the task set, and has trained
        task.prepare_model(model, train_features, collate)
    generator = torch.Generator().manual_seed(hp.seed)
    loader: DataLoader[Any] = DataLoader(
        cast(Any, train_features),
        batch_size=hp.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=generator,
    )
    val_loader: DataLoader[Any] = DataLoader(
        cast(Any, validation_features), batch_size=hp.batch_size * 2, collate_fn=collate
    )
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_")
    params = [
        {
            "params": [p for n, p in model.named_parameters() if not any(k in n for k in no_decay)],
            "weight_decay": hp.weight_decay,
        },
        {
            "params": [p for n, p in model.named_parameters() if any(k in n for k in no_decay)],
            "weight_decay": 0.0,
        },
    ]
    # The fused kernel (CPU and CUDA), as transformers.Trainer uses by default with torch 2.8+.
    optimizer = torch.optim.AdamW(params, lr=hp.learning_rate, fused=True)
    total_steps = hp.epochs * len(loader)
    scheduler = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, math.ceil(hp.warmup_ratio * total_steps), total_steps
    )
    step = 0
    first_epoch = 1
    if resume is not None:
        first_epoch, step = resume.epoch + 1, resume.step
        for _ in range(step):  # put the learning rate where the interrupted run left it
            scheduler.step()
        for _ in range(resume.epoch):  # and the data order
            torch.randperm(len(train_features), generator=generator)
    last = resume
    since_best = 0 if best is None or last is None else last.epoch - best.epoch
    model.train()
    started = time.monotonic()
    steps_this_run = 0
    for epoch in range(first_epoch, hp.epochs + 1):
        if best is not None and last is not None and since_best >= hp.early_stopping_patience:
            return Outcome(best, stopped_early=True, last=last)
        window_loss, window_steps, window_examples = 0.0, 0, 0
        window_start = last_report = time.monotonic()
        for batch in loader:
            if cancelled():
                raise Cancelled
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            steps_this_run += 1
            window_loss += float(loss.detach())
            window_steps += 1
            window_examples += len(batch["labels"])
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S or step == total_steps:
                per_step = (now - started) / steps_this_run
                reporter.progress(
                    Progress(
                        epoch=epoch,
                        epochs=hp.epochs,
                        step=step,
                        total_steps=total_steps,
                        loss=window_loss / window_steps,
                        eta_seconds=per_step * (total_steps - step),
                        examples_per_second=window_examples / max(now - window_start, 1e-9),
                    )
                )
                window_loss, window_steps, window_examples = 0.0, 0, 0
                window_start = last_report = now
        metrics = evaluate(model, task, val_loader, labels)
        improved = best is None or rank(task, metrics) > rank(task, best.metrics)
        path = workdir / "checkpoints" / f"epoch-{epoch}"
        model.save_pretrained(path, safe_serialization=True)
        checkpoint = Checkpoint(epoch, step, path, metrics)
        reporter.checkpoint(checkpoint)
        reporter.evaluated(epoch, metrics, improved)
        superseded = [c for c in (last, best) if c is not None]
        last = checkpoint
        if improved or best is None:
            best, since_best = checkpoint, 0
        else:
            since_best += 1
        for old in superseded:
            if old.epoch not in (best.epoch, checkpoint.epoch):
                shutil.rmtree(old.path, ignore_errors=True)
                reporter.checkpoint_removed(old.epoch)
        if since_best >= hp.early_stopping_patience and epoch < hp.epochs:
            log.info("early stopping after epoch %d", epoch)
            return Outcome(best, stopped_early=True, last=last)
    if best is None or last is None:  # resumed with every epoch done and no checkpoint kept
        raise RuntimeError("training ended without a checkpoint")
    return Outcome(best, stopped_early=False, last=last)
