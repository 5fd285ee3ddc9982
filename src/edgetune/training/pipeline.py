"""One job from data to a published model version (runs in the training process)."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from opentelemetry import trace

from edgetune.errors import ResourceExhausted, quoted
from edgetune.exporters.evaluate import evaluate, latency_ms
from edgetune.exporters.gate import FP32_FILE, FUSED_FILE, INT8_FILE, choose_int8
from edgetune.exporters.onnx import export_onnx
from edgetune.store import Manifest, ModelVersion
from edgetune.store.manifest import MODEL_FILE
from edgetune.task import Task
from edgetune.training.context import JobContext
from edgetune.training.faults import Faults
from edgetune.training.jobstore import Checkpoint, JobStore
from edgetune.training.loop import Cancelled, Outcome, Progress, Reporter, rank, train
from edgetune.training.prepare import load_data, resolve_base
from edgetune.training.report import (
    against_previous,
    comparison,
    few_rows_note,
    job_baseline,
    previous_metrics,
)
from edgetune.training.results import find_published, result_of
from edgetune.training.search import Search, checkpoint_of, data_max_length, progress_data
from edgetune.training.spec import Hyperparameters, JobState, SearchSpec

tracer = trace.get_tracer("edgetune.training")
"""Spans of a job's phases (no-ops unless the process set a tracer provider)."""
log = logging.getLogger(__name__)


class StoreReporter(Reporter):
    """Writes the loop's reports to the job store as events."""

    def __init__(self, store: JobStore, job_id: str, faults: Faults) -> None:
        self.store = store
        self.job_id = job_id
        self.faults = faults

    def progress(self, progress: Progress) -> None:
        data = progress_data(progress)
        message = (
            f"epoch {progress.epoch}/{progress.epochs} step {progress.step}/"
            f"{progress.total_steps} loss {progress.loss:.4f}"
        )
        self.store.update(self.job_id, message, {"progress": data}, progress=data)

    def evaluated(self, epoch: int, metrics: dict[str, float], best: bool) -> None:
        summary = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "/" not in k)
        note = " (best so far)" if best else ""
        fields: dict[str, Any] = {"metrics": metrics} if best else {}
        self.store.update(
            self.job_id,
            f"epoch {epoch} validation: {summary}{note}",
            {"metrics": metrics, "epoch": epoch},
            **fields,
        )
        self.faults.pause("epoch")

    def checkpoint(self, checkpoint: Checkpoint) -> None:
        self.store.add_checkpoint(self.job_id, checkpoint)

    def checkpoint_removed(self, epoch: int) -> None:
        self.store.remove_checkpoint(self.job_id, epoch)


def run_job(context: JobContext) -> None:
    """Train, export, quantize, gate and publish; raises Cancelled when cancelled.

    A job whose version is already in the repository (its process was killed after the
    rename that published it, before the job recorded it) records that version instead
    of training and publishing a second one.
    """
    job, store, cancelled = context.job, context.store, context.cancelled
    spec = job.spec
    faults = context.faults
    published = find_published(context.repository, spec.model_name, job.id)
    if published is not None:
        store.update(
            job.id,
            f"{published.name} version {published.version} was published by this job before "
            "it was interrupted; recording it instead of training again",
            {},
        )
        # Published: a cancel can no longer stop this job (it succeeds with its version).
        store.transition(
            job.id,
            JobState.EXPORTING,
            f"version {published.version} is already published",
            allowed_from=[JobState.RUNNING],
        )
        result = result_of(published)
    else:
        result = train_and_publish(context)
    with contextlib.suppress(Cancelled):  # a cancel ending the test pause is too late too
        faults.pause("published")
    shutil.rmtree(context.workdir, ignore_errors=True)
    message = f"published {result['model_name']} version {result['version']} ({result['format']})"
    if cancelled():
        # The version is in the repository: the job succeeds with it, never cancelled.
        message += "; the cancel came after the version was published, too late to stop it"
    if spec.auto_promote:
        # The server promotes it (load, warm, switch traffic), then marks the job succeeded.
        store.update(job.id, f"{message}; promoting", {"result": result}, result=result)
    else:
        store.transition(
            job.id,
            JobState.SUCCEEDED,
            message,
            allowed_from=[JobState.EXPORTING],
            data={"result": result},
            result=result,
        )


@dataclass(frozen=True)
class Prepared:
    """A job's data made ready for training: rows, labels, features and the base model."""

    task: Task
    base: Path
    preprocessor: Any
    labels: list[str]
    collate: Any
    train_rows: list[Mapping[str, Any]]
    val_rows: list[Mapping[str, Any]]
    train_features: list[dict[str, Any]]
    val_features: list[dict[str, Any]]
    hp: Hyperparameters
    """The request's hyperparameters, with max_length set from the data when searched."""
    previous: ModelVersion | None
    """The repository version training starts from (`base_model`), if any."""
    refit: bool
    """Whether a search's chosen configuration is retrained on all labelled rows."""
    trial_max_length: int
    """max_length of the search's trials: hp.max_length, or less when the published model
    is a retraining (the trials only rank configurations)."""
    trial_features: tuple[list[dict[str, Any]], list[dict[str, Any]]]
    """(training, validation) features at trial_max_length: the trials train on these."""


def prepare(context: JobContext, search: SearchSpec | None) -> Prepared:
    """Read the data set and the base, and build the features (at the data's length when a
    search chooses it; the trials of a search whose choice is retrained see at most
    `search_trial_max_length` tokens of each input, a fraction of the cost)."""
    spec, hp, settings = context.job.spec, context.job.spec.hyperparameters, context.settings
    task = context.plugins.task(spec.task)
    with tracer.start_as_current_span("prepare"):
        train_rows, val_rows, labels = load_data(spec, task, context.datasets)
        base, previous = resolve_base(spec, context.repository)
        preprocessor = task.load_preprocessor(base)
    rows = len(train_rows) + len(val_rows)
    refit = (
        search is not None
        and not spec.validation_dataset_id
        and rows <= settings.training.search_refit_rows
    )
    with tracer.start_as_current_span("features"):
        trial_length = hp.max_length
        if search is not None and "max_length" not in search.fixed:
            length = data_max_length(task, settings, train_rows, preprocessor, hp)
            hp = hp.model_copy(update={"max_length": length})
            trial_length = length
            if refit and settings.training.search_trial_max_length:
                trial_length = min(length, settings.training.search_trial_max_length)
        train_features = task.build_features(train_rows, preprocessor, labels, hp.max_length)
        val_features = task.build_features(val_rows, preprocessor, labels, hp.max_length)
        trial_features = (train_features, val_features)
        if trial_length < hp.max_length:
            trial_features = (
                task.build_features(train_rows, preprocessor, labels, trial_length),
                task.build_features(val_rows, preprocessor, labels, trial_length),
            )
    return Prepared(
        task,
        base,
        preprocessor,
        labels,
        task.collate(preprocessor),
        list(train_rows),
        list(val_rows),
        train_features,
        val_features,
        hp,
        previous,
        refit,
        trial_length,
        trial_features,
    )


def train_and_publish(context: JobContext) -> dict[str, Any]:
    """Search (or train once), retrain on all rows when the data is small, then export and
    publish. Training resumes from the last checkpoint, a search from its finished trials."""
    job, store = context.job, context.store
    spec = job.spec
    search = spec.search if spec.search.enabled and spec.search.ranges() else None
    data = prepare(context, search)
    task, hp, val_rows = data.task, data.hp, data.val_rows
    with tracer.start_as_current_span("baseline"):
        baseline = job_baseline(task, store, job.id, data.train_rows, val_rows, data.labels)
    context.say(
        f"training on {len(data.train_rows)} examples, validating on "
        f"{len(val_rows)}; labels: {', '.join(data.labels)}"
    )
    report: dict[str, Any] = {"baseline": baseline} if baseline else {}
    few_rows = few_rows_note(task, val_rows)
    if search is None and few_rows and not spec.validation_dataset_id:
        # A split this small cannot choose an epoch or estimate accuracy (one row moves a
        # label's F1 by 20 points): its rows are worth more as training data. BBC, 8
        # articles a label, sentence classifier: 32 training rows -> all 40, +0.7 points
        # held out (mean of 3 seeds, 1,425 articles).
        rows = len(data.train_rows) + len(val_rows)
        context.say(f"few validation rows: training on all {rows} labelled rows")
        hp = hp.model_copy(update={"early_stopping_patience": 100})
        with tracer.start_as_current_span("train"):
            best = train_on_all_rows(context, data, hp)
        report["retrained"] = True
        report["estimated_metrics"] = {}
        report["selection"] = (
            f"a single run on all {rows} labelled rows (the validation rows too, after "
            f"{hp.epochs} epochs): its fp32 and int8 figures are on rows it trained on, so "
            "they check quantization, not accuracy"
        )
    elif search is None:
        with tracer.start_as_current_span("train"):
            outcome = run_training(context, data, data.train_features, hp)
        best = outcome.best
        report["selection"] = (
            f"a single run; figures are on the {len(val_rows)} validation rows, "
            f"unseen in training (best epoch {best.epoch})"
        )
        report["estimated_metrics"] = best.metrics
    else:
        trial_length = data.trial_max_length
        if trial_length < hp.max_length:
            context.say(
                f"trials see the first {trial_length} tokens of each input; the retraining "
                f"on all rows, {hp.max_length}"
            )
        with tracer.start_as_current_span("search"):
            found = Search(
                context, search, hp.model_copy(update={"max_length": trial_length}), task
            ).run(
                lambda: task.build_model(data.base, data.labels),
                data.collate,
                *data.trial_features,
                data.labels,
            )
        store.update(job.id, found.summary, {"metrics": found.metrics}, metrics=found.metrics)
        report["trials"] = found.trials
        report["estimated_metrics"] = found.metrics
        hp = found.hyperparameters.model_copy(update={"max_length": hp.max_length})
        rows = len(data.train_rows) + len(val_rows)
        if data.refit:
            # For the configuration's epochs, its whole learning-rate schedule, not the
            # trial's best epoch: a split this small cannot place the best epoch (BBC News,
            # 161 rows: f1 1.0, 0.988, 0.994 at epochs 1-3 while the loss fell), and
            # the retraining has a quarter more rows. 800 articles, 4 epochs: 0.9747
            # held out; after the first of them, 0.927.
            hp = hp.model_copy(update={"early_stopping_patience": 100})
            context.say(
                f"retraining the chosen configuration on all {rows} labelled rows for its "
                f"{hp.epochs} epochs (its trial's best epoch: {found.best_epoch})"
            )
            with tracer.start_as_current_span("refit"):
                best = train_on_all_rows(context, data, hp)
            at = f" (at {trial_length} tokens)" if trial_length < hp.max_length else ""
            report["retrained"] = True
            report["selection"] = (
                f"{found.summary}; retrained on all {rows} labelled rows (the validation rows "
                "too), so its fp32 and int8 figures are on rows it trained on: they check "
                "quantization, not accuracy. estimated_metrics are the chosen configuration's "
                f"on the {len(val_rows)} validation rows before retraining{at} (optimistic by "
                "the selection among trials)"
            )
        else:
            best = checkpoint_of(found)
            report["selection"] = (
                f"{found.summary}; published that trial's model: figures are on the "
                f"{len(val_rows)} validation rows, unseen in training"
            )
    report["estimated_metrics"] = {
        k: v for k, v in report["estimated_metrics"].items() if not k.startswith("confusion/")
    }
    if few_rows:
        report["selection"] = f"{report['selection']}; {few_rows}"
    if context.cancelled() or not store.transition(
        job.id,
        JobState.EXPORTING,
        f"exporting the chosen checkpoint (epoch {best.epoch}) to ONNX",
        allowed_from=[JobState.RUNNING],
    ):
        raise Cancelled
    try:
        with context.faults.file_size_limit("publish"), tracer.start_as_current_span("publish"):
            return publish(context, data, best, hp=hp, report=report)
    except Exception as exc:
        if (cause := out_of_space(exc)) is None:
            raise
        # The staging folder is gone with the exception; nothing was renamed into place.
        raise ResourceExhausted(
            f"out of disk space while publishing {spec.model_name} ({cause}); nothing was "
            f"published: free space under {context.repository.root} and create the job again"
        ) from exc


def run_training(
    context: JobContext,
    data: Prepared,
    train_features: list[dict[str, Any]],
    hp: Hyperparameters,
) -> Outcome:
    """The job's main training run on train_features (the training rows, or all rows for a
    retraining), from its last checkpoint when it was interrupted."""
    task = data.task
    checkpoints = context.store.checkpoints(context.job_id)
    last = checkpoints[-1] if checkpoints else None
    best = max(checkpoints, key=lambda c: rank(task, c.metrics), default=None)
    if last is not None:
        context.say(f"resuming after epoch {last.epoch} from its checkpoint")
    # A fresh head is drawn from torch's generator: seeded, the same seed gives the same
    # model on every runner (the generator's state at this point differs between them).
    torch.manual_seed(hp.seed)
    return train(
        task,
        task.build_model(last.path if last else data.base, data.labels),
        data.collate,
        train_features,
        data.val_features,
        data.labels,
        hp,
        context.workdir,
        StoreReporter(context.store, context.job_id, context.faults),
        context.cancelled,
        resume=last,
        best=best,
    )


def train_on_all_rows(context: JobContext, data: Prepared, hp: Hyperparameters) -> Checkpoint:
    """A run on the training and the validation rows (no unseen rows are left to choose an
    epoch on): its last epoch."""
    return run_training(context, data, data.train_features + data.val_features, hp).last


def publish(
    context: JobContext,
    data: Prepared,
    best: Checkpoint,
    *,
    hp: Hyperparameters,
    report: Mapping[str, Any],
) -> dict[str, Any]:
    """Export the best checkpoint, quantize, gate int8 against fp32, publish a version.

    :param hp: the hyperparameters the checkpoint trained with.
    :param report: what the manifest and the result say beside the metrics: "baseline",
        "trials", "selection", "estimated_metrics".
    """
    task, labels, spec, faults = data.task, data.labels, context.job.spec, context.faults
    preprocessor, val_rows = data.preprocessor, data.val_rows
    val_label_ids = [f["labels"] for f in data.val_features]
    settings, repository = context.settings, context.repository
    model = task.build_model(best.path, labels)
    with repository.staging() as staged:
        with tracer.start_as_current_span("export"):
            export_onnx(task, model, preprocessor, staged)
        faults.pause("export")
        manifest = Manifest(
            task=task.name,
            labels=labels,
            base_model=spec.base_label,
            format="onnx-fp32",
            task_options=task.trained_options(
                task.task_options(model, preprocessor, hp.max_length)
            ),
            training={
                "job": context.job_id,
                "dataset_id": spec.dataset_id,
                "validation_dataset_id": spec.validation_dataset_id,
                "hyperparameters": hp.model_dump(),
                "best_epoch": best.epoch,
                **report,
            },
        )
        with tracer.start_as_current_span("quantize_and_gate"):
            fp32 = evaluate(task, staged, MODEL_FILE, manifest, val_rows, val_label_ids)
            manifest.task_options = task.calibrate(manifest.task_options, fp32)
            chosen, int8, gate = choose_int8(
                task,
                staged,
                manifest,
                fp32,
                val_rows,
                val_label_ids,
                budget=settings.training.max_accuracy_drop,
                on_failure=settings.training.gate_failure,
            )
        if chosen is not None:
            (staged / MODEL_FILE).rename(staged / FP32_FILE)
            (staged / chosen).rename(staged / MODEL_FILE)
            manifest.format = "onnx-int8"
        latency = latency_ms(task, staged, MODEL_FILE, manifest, val_rows[0])
        manifest.metrics = {
            **{f"fp32.{k}": v for k, v in fp32.items()},
            **{f"int8.{k}": v for k, v in int8.items()},
            "latency_ms": latency,
        }
        for leftover in (INT8_FILE, FUSED_FILE):
            (staged / leftover).unlink(missing_ok=True)
        manifest.training["gate"] = gate
        served = int8 if manifest.format == "onnx-int8" else fp32
        metric = spec.search.metric or task.selection_metric
        manifest.training["comparison"] = comparison(report, served, len(val_rows), metric)
        if data.previous is not None:
            compared = compare_previous(data.previous, data, hp, report, served, metric)
            manifest.training.update(compared)
        faults.pause("publish")
        if faults.cancelled():  # the last moment a cancel can stop the job: nothing published
            raise Cancelled
        version = repository.publish(spec.model_name, staged, manifest, aliases=())
    log.info("published %s:%d: %s", version.name, version.version, gate)
    return result_of(version)


def compare_previous(
    previous: ModelVersion,
    data: Prepared,
    hp: Hyperparameters,
    report: Mapping[str, Any],
    served: Mapping[str, float],
    metric: str,
) -> dict[str, Any]:
    """The "previous_metrics" and "previous_comparison" of a job that started from the
    version previous (resolved when the job prepared, not whatever `latest` names now). Like
    the baseline, a comparison is never a reason to fail the job: one that cannot be made
    is said."""
    try:
        theirs, rows = previous_metrics(
            data.task, previous, data.val_rows, data.preprocessor, hp.max_length
        )
    except Exception as exc:
        log.exception("measuring %s:%d failed", previous.name, previous.version)
        return {
            "previous_comparison": f"no comparison with {previous.name} version "
            f"{previous.version}: {type(exc).__name__}: {quoted(str(exc))}"
        }
    return {
        "previous_metrics": theirs,
        "previous_comparison": against_previous(
            previous, theirs, (rows, len(data.val_rows)), report, served, metric
        ),
    }


SPACE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
SPACE_MESSAGES = ("No space left on device", "Disk quota exceeded", "File too large")


def out_of_space(exc: BaseException) -> str | None:
    """What says the disk (or a quota, or a file size limit) was full, if exc or an error
    it came from says so; else None. Libraries that write from C++ (the ONNX exporter,
    ONNX Runtime) raise RuntimeError with the system's message instead of OSError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in SPACE_ERRORS:
            detail = os.strerror(current.errno)
            return f"{detail}: {current.filename}" if current.filename else detail
        text = str(current)
        for message in SPACE_MESSAGES:
            if message in text:
                return message
        current = current.__cause__ or current.__context__
    return None
