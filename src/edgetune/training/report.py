"""What a job reports beside its model: the task's classical baseline on the job's rows,
and the published model against it, in words. Runs in the training process."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.task import Task
from edgetune.training.jobstore import JobStore

log = logging.getLogger(__name__)


def job_baseline(
    task: Task,
    store: JobStore,
    job_id: str,
    train_rows: Sequence[Mapping[str, Any]],
    val_rows: Sequence[Mapping[str, Any]],
    labels: list[str],
) -> dict[str, Any] | None:
    """The task's classical baseline on the job's rows, reported as an event once (a
    resumed job finds it among its events)."""
    for event in store.events(job_id):
        if "baseline" in event.data:
            return dict(event.data["baseline"])
    try:
        found = task.baseline(train_rows, val_rows, labels)
    except Exception as exc:  # a baseline is a comparison, never a reason to fail the job
        log.exception("baseline of job %s failed", job_id)
        store.update(job_id, f"no baseline: {type(exc).__name__}: {exc}", {})
        return None
    if found is None:
        return None
    metrics = {k: v for k, v in found.metrics.items() if not k.startswith("confusion/")}
    baseline = {"description": found.description, "metrics": metrics}
    summary = ", ".join(f"{k} {metrics[k]:.4f}" for k in task.search_metrics if k in metrics)
    store.update(
        job_id,
        f"baseline ({found.description}) on the {len(val_rows)} validation rows: {summary}",
        {"baseline": baseline},
    )
    return baseline


def comparison(
    report: Mapping[str, Any],
    served: Mapping[str, float],
    rows: int,
    metric: str,
) -> str:
    """The published model against the baseline on the same validation rows, in words: the
    served model's figures, or the search's estimate when it was retrained on those rows
    (none when a single run trained on them: then there is nothing fair to compare)."""
    baseline = report.get("baseline")
    if not baseline:
        return "no baseline for this task"
    ours = report["estimated_metrics"] if report.get("retrained") else served
    if not ours:
        return (
            "no comparison with the baseline: the model trained on all labelled rows, so "
            "no rows were left unseen by it to compare on"
        )
    mine, theirs = float(ours.get(metric, 0.0)), float(baseline["metrics"].get(metric, 0.0))
    points = (mine - theirs) * 100
    figures = (
        f"{metric} {mine:.4f} vs {theirs:.4f} for the baseline on the same {rows} validation "
        f"rows ({points:+.2f} points)"
    )
    if mine > theirs:
        return f"fine-tuned model better: {figures}"
    return (
        f"the baseline is as good or better: {figures}; the fine-tuned model was published "
        f"anyway ({baseline['description']} may serve this data as well)"
    )


MIN_RELIABLE_ROWS = 5
"""Validation rows a label needs for the job's figures to mean much: with fewer, one row
moves a label's F1 by 20 points or more, and the int8 gate's 1-point budget by more."""


def few_rows_note(task: Task, val_rows: Sequence[Mapping[str, Any]]) -> str | None:
    """A warning for the job's result when some label has fewer than MIN_RELIABLE_ROWS
    validation rows (a few-shot job), naming the sparsest label; None otherwise."""
    counts: dict[str, int] = {}
    for row_number, row in enumerate(val_rows, start=1):
        for label in task.example_labels(row, row_number):
            counts[label] = counts.get(label, 0) + 1
    if not counts or min(counts.values()) >= MIN_RELIABLE_ROWS:
        return None
    label = min(counts, key=lambda name: (counts[name], name))
    return (
        f"few validation rows (as few as {counts[label]} for label {label!r}, "
        f"{len(val_rows)} in all): the validation figures and the int8 gate are unreliable; "
        "measure the model on more labelled data before trusting them"
    )
