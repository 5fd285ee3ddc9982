"""What a job reports beside its model: the task's classical baseline on the job's rows,
the published model against it and against the version the job started from, in words.
Runs in the training process."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from edgetune.exporters.evaluate import evaluate
from edgetune.store import ModelVersion
from edgetune.store.manifest import MODEL_FILE
from edgetune.task import Preprocessor, Task
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


def previous_metrics(
    task: Task,
    previous: ModelVersion,
    val_rows: Sequence[Mapping[str, Any]],
    preprocessor: Preprocessor,
    max_length: int,
) -> tuple[dict[str, float], int]:
    """The metrics of the version a job started from, through its served ONNX model, on
    the job's validation rows whose labels that version knows, and how many rows those
    are ({} and 0 when there are none)."""
    known = set(previous.manifest.labels)
    rows = [
        row
        for number, row in enumerate(val_rows, start=1)
        if set(task.example_labels(row, number)) <= known
    ]
    if not rows:
        return {}, 0
    features = task.build_features(rows, preprocessor, previous.manifest.labels, max_length)
    metrics = evaluate(
        task, previous.path, MODEL_FILE, previous.manifest, rows, [f["labels"] for f in features]
    )
    return {k: v for k, v in metrics.items() if not k.startswith("confusion/")}, len(rows)


def against_previous(
    previous: ModelVersion,
    theirs: Mapping[str, float],
    rows: tuple[int, int],
    report: Mapping[str, Any],
    served: Mapping[str, float],
    metric: str,
) -> str:
    """This version against the one the job started from on the same validation rows, in
    words: the served figures, or the search's estimate when the published model was
    retrained on those rows; none when a single run trained on them, or when the old
    version knew the labels of only some of the rows (the figures would be on other rows).

    :param rows: (validation rows the previous version was measured on, all of them).
    """
    name = f"{previous.name} version {previous.version}"
    measured, total = rows
    if not measured:
        return f"no comparison with {name}: it knows none of the validation rows' labels"
    old = float(theirs.get(metric, 0.0))
    figures = f"{name} on {measured} validation rows: {metric} {old:.4f}"
    if measured < total:
        return (
            f"{name} on the {measured} of {total} validation rows whose labels it knows: "
            f"{metric} {old:.4f}; this version's figures are on all {total}, so they are "
            "not compared"
        )
    ours = report["estimated_metrics"] if report.get("retrained") else served
    if not ours:
        return f"{figures}; this version trained on those rows, so it is not compared there"
    mine = float(ours.get(metric, 0.0))
    which = "the chosen configuration before retraining" if report.get("retrained") else "this"
    return f"{figures}, {which} {mine:.4f} ({(mine - old) * 100:+.2f} points)"


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
