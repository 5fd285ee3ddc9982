"""Hyperparameter search inside a job (training process): an Optuna study of trials, each a
run of the training loop, pruned on its per-epoch validation metric.

The study lives in `<jobs_dir>/search.db` (SQLite, beside the job store) under the job's
id, so a training process started again after a restart finds the finished trials and
does not run them again; a trial the restart interrupted is marked failed and its
hyperparameters are tried again. The first trial starts from `SEARCH_START` with the task's
`search_start` over it (for what the request did not set). No trial starts once the time
budget is spent, or once a trial scored perfectly on the validation rows.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from opentelemetry import trace
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial, TrialState

from edgetune.settings import Settings
from edgetune.task import Task
from edgetune.training.context import JobContext
from edgetune.training.jobstore import Checkpoint, JobStore
from edgetune.training.loop import Progress, Reporter, train
from edgetune.training.spec import SEARCH_START, Hyperparameters, Range, SearchSpec

tracer = trace.get_tracer("edgetune.training")
log = logging.getLogger(__name__)

BEST_DIR = "best"
"""Where a finished trial keeps its best checkpoint: `<workdir>/trials/<number>/best`,
until a better trial replaces it (so the checkpoint on disk always matches the study)."""
MAX_FAILURES = 3
"""Failed trials in one training process after which the search gives up."""
PERFECT = 1.0
"""The highest score of every search metric (`Task.search_metrics` are at most 1): once a
trial reaches it, the validation rows cannot tell a better configuration from it, and more
trials would only be chosen on noise (the validation loss)."""
LOG_SCALE = frozenset({"learning_rate"})
STATE_NAMES = {
    TrialState.COMPLETE: "complete",
    TrialState.PRUNED: "pruned",
    TrialState.FAIL: "failed",
}
SHORT = {
    "learning_rate": "lr",
    "batch_size": "batch",
    "epochs": "epochs",
    "warmup_ratio": "warm-up",
    "weight_decay": "decay",
}


def storage_url(settings: Settings) -> str:
    """The Optuna storage of every job's search."""
    return f"sqlite:///{settings.jobs_dir / 'search.db'}"


def forget(settings: Settings, job_id: str) -> None:
    """Drop a job's study once the job is final (its trials live on in the result)."""
    if not (settings.jobs_dir / "search.db").exists():
        return
    with contextlib.suppress(KeyError):  # KeyError: the job never searched
        optuna.delete_study(study_name=job_id, storage=storage_url(settings))


def distribution(name: str, r: Range) -> BaseDistribution:
    """The Optuna distribution of one hyperparameter's range."""
    integer = Hyperparameters.model_fields[name].annotation in (int, "int")
    if r.choices:
        return CategoricalDistribution([int(c) if integer else c for c in r.choices])
    if integer:
        return IntDistribution(int(r.low), int(r.high))
    return FloatDistribution(r.low, r.high, log=name in LOG_SCALE)


def clipped(value: Any, d: BaseDistribution) -> Any:
    """value moved into distribution d (the first trial's values must lie in the space)."""
    if isinstance(d, CategoricalDistribution):
        return value if value in d.choices else d.choices[0]
    if isinstance(d, IntDistribution | FloatDistribution):
        return type(d.low)(min(max(value, d.low), d.high))
    return value


def describe(hp: Hyperparameters, names: Sequence[str]) -> str:
    """ "lr 1.2e-04, batch 16, epochs 4" for the searched names."""
    parts = []
    for name in names:
        value = getattr(hp, name)
        text = f"{value:.1e}" if name in LOG_SCALE else f"{value:g}"
        parts.append(f"{SHORT.get(name, name)} {text}")
    return ", ".join(parts)


@dataclass(slots=True)
class SearchOutcome:
    """What the search chose."""

    hyperparameters: Hyperparameters
    best_epoch: int
    metrics: dict[str, float]
    trials: list[dict[str, Any]]
    checkpoint: Path
    """The chosen trial's best checkpoint (in the job's work folder)."""
    summary: str


class TrialReporter(Reporter):
    """Progress and validation of one trial as job events; prunes through Optuna."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        trial: optuna.Trial,
        trials: int,
        metric: str,
    ) -> None:
        self.store, self.job_id, self.trial = store, job_id, trial
        self.number, self.trials, self.metric = trial.number + 1, trials, metric
        self.epochs_run = 0

    def progress(self, progress: Progress) -> None:
        progress.trial, progress.trials = self.number, self.trials
        data = progress_data(progress)
        message = (
            f"trial {self.number}/{self.trials} epoch {progress.epoch}/{progress.epochs} "
            f"step {progress.step}/{progress.total_steps} loss {progress.loss:.4f}"
        )
        self.store.update(self.job_id, message, {"progress": data}, progress=data)

    def evaluated(self, epoch: int, metrics: dict[str, float], best: bool) -> None:
        self.epochs_run = epoch
        self.store.update(
            self.job_id,
            f"trial {self.number}/{self.trials} epoch {epoch} validation: "
            f"{self.metric} {metrics[self.metric]:.4f}",
            {"epoch": epoch},
        )
        self.trial.report(metrics[self.metric], epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"{self.metric} {metrics[self.metric]:.4f} after epoch {epoch}"
            )


def progress_data(progress: Progress) -> dict[str, Any]:
    """A progress report as stored in the job (the Progress message's fields)."""
    return {
        "epoch": progress.epoch,
        "epochs": progress.epochs,
        "step": progress.step,
        "total_steps": progress.total_steps,
        "loss": round(progress.loss, 5),
        "eta_seconds": round(progress.eta_seconds, 1),
        "examples_per_second": round(progress.examples_per_second, 2),
        "trial": progress.trial,
        "trials": progress.trials,
    }


class Search:
    """The search of one job."""

    def __init__(
        self, context: JobContext, search: SearchSpec, hp: Hyperparameters, task: Task
    ) -> None:
        self.job_id, self.search, self.hp, self.task = context.job_id, search, hp, task
        self.settings, self.store, self.workdir = context.settings, context.store, context.workdir
        self.cancelled, self.faults = context.cancelled, context.faults
        self.metric = search.metric or task.selection_metric
        self.space = {name: distribution(name, r) for name, r in search.ranges().items()}
        self.study = optuna.create_study(
            storage=optuna.storages.RDBStorage(
                storage_url(self.settings), engine_kwargs={"connect_args": {"timeout": 30}}
            ),
            study_name=self.job_id,
            direction="maximize",
            # Seeded: the same job asks the same hyperparameters in the same order.
            sampler=optuna.samplers.TPESampler(seed=hp.seed, n_startup_trials=3),
            # Stop a trial whose best metric by epoch N is below the median of the complete
            # trials before it at epoch N (from the second trial on: the first is the
            # reference), so a search costs about its first trial plus an epoch or two
            # of each hopeless one.
            pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0),
            load_if_exists=True,
        )

    def _event(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.store.update(self.job_id, message, data or {})

    def _recover(self) -> None:
        """Fail the trial a restart interrupted and queue its hyperparameters again."""
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            self.study.tell(trial.number, state=TrialState.FAIL)
            self.study.enqueue_trial(trial.params)
            self._event(
                f"trial {trial.number + 1} was interrupted by a restart; "
                "its hyperparameters are tried again"
            )
        if not self.study.trials:
            start = {**SEARCH_START, **self.task.search_start}
            self.study.enqueue_trial(
                {name: clipped(start[name], d) for name, d in self.space.items()}
            )

    def _finished(self) -> list[FrozenTrial]:
        return self.study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)
        )

    def _budget_s(self) -> float | None:
        """Seconds the trials may take together; None until the first trial sets it."""
        if self.search.time_budget_minutes:
            return self.search.time_budget_minutes * 60
        first = [t for t in self.study.trials if t.number == 0 and "seconds" in t.user_attrs]
        if not first:
            return None
        return float(self.settings.training.search_budget_factor * first[0].user_attrs["seconds"])

    def run(
        self,
        build_model: Callable[[], Any],
        collate: Any,
        train_features: list[dict[str, Any]],
        validation_features: list[dict[str, Any]],
        labels: Sequence[str],
    ) -> SearchOutcome:
        """Run trials until `trials` finished or the budget is spent; the best one wins."""
        self._recover()
        names = list(self.space)
        done = len(self._finished())
        if done:
            self._event(f"resuming the search after {done} finished trials")
        failures = 0
        while len(self._finished()) + failures < self.search.trials:
            if failures >= MAX_FAILURES:
                self._event(f"{failures} trials failed; the search stops")
                break
            spent = sum(float(t.user_attrs.get("seconds", 0.0)) for t in self._finished())
            budget = self._budget_s()
            if budget is not None and spent >= budget and self._best() is not None:
                self._event(
                    f"time budget of {budget / 60:.1f} min spent after "
                    f"{len(self._finished())} trials"
                )
                break
            if (best := self._best()) is not None and (best.value or 0.0) >= PERFECT:
                self._event(
                    f"trial {best.number + 1} scored a perfect {self.metric} on the "
                    f"{len(validation_features)} validation rows: no configuration can rank "
                    "above it there, so the search stops"
                )
                break
            if not self._trial(
                names, build_model, collate, train_features, validation_features, labels
            ):
                failures += 1
        best = self._best()
        if best is None:
            raise RuntimeError("every trial of the search failed; see the job's events")
        checkpoint = self.workdir / "trials" / str(best.number + 1) / BEST_DIR
        chosen = self.hp.model_copy(update=best.params)
        trials = self.trials()
        summary = (
            f"search: {len(self._finished())} trials, best trial {best.number + 1} "
            f"({describe(chosen, names)}) {self.metric} {best.value:.4f} at epoch "
            f"{best.user_attrs['best_epoch']}"
        )
        return SearchOutcome(
            chosen,
            int(best.user_attrs["best_epoch"]),
            dict(best.user_attrs["metrics"]),
            trials,
            checkpoint,
            summary,
        )

    def _best(self) -> FrozenTrial | None:
        """The complete trial with the highest metric; ties (common on small validation
        sets) go to the lower validation loss."""
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return max(
            complete,
            key=lambda t: (t.value, -t.user_attrs["metrics"].get("loss", 0.0)),
            default=None,
        )

    def _trial(
        self,
        names: list[str],
        build_model: Callable[[], Any],
        collate: Any,
        train_features: list[dict[str, Any]],
        validation_features: list[dict[str, Any]],
        labels: Sequence[str],
    ) -> bool:
        """Run one trial; False when it failed (a pruned trial did not fail)."""
        trial = self.study.ask(self.space)
        number, of = trial.number + 1, self.search.trials
        hp = self.hp.model_copy(update=trial.params)
        folder = self.workdir / "trials" / str(number)
        shutil.rmtree(folder, ignore_errors=True)  # left by a run a restart interrupted
        reporter = TrialReporter(self.store, self.job_id, trial, of, self.metric)
        self._event(f"trial {number}/{of}: {describe(hp, names)}")
        started = time.monotonic()
        torch.manual_seed(hp.seed)  # the same fresh head in every trial: they differ by hp
        try:
            with tracer.start_as_current_span(
                "trial", attributes={"edgetune.trial": number, **_span_attributes(trial.params)}
            ):
                outcome = train(
                    self.task,
                    build_model(),
                    collate,
                    train_features,
                    validation_features,
                    labels,
                    hp,
                    folder,
                    reporter,
                    self.cancelled,
                )
        except optuna.TrialPruned as exc:
            trial.set_user_attr("seconds", time.monotonic() - started)
            trial.set_user_attr("epochs_run", reporter.epochs_run)
            self.study.tell(trial, state=TrialState.PRUNED)
            shutil.rmtree(folder, ignore_errors=True)
            self._event(
                f"trial {number}/{of}: {describe(hp, names)} → pruned ({exc}, below the "
                "median of the trials before it)",
                {"trial": self._trial_data(self.study.trials[trial.number])},
            )
            return True
        except Exception as exc:
            if self.cancelled():
                raise
            self.study.tell(trial, state=TrialState.FAIL)
            shutil.rmtree(folder, ignore_errors=True)
            log.exception("trial %d failed", number)
            self._event(f"trial {number}/{of}: failed: {type(exc).__name__}: {exc}")
            if not isinstance(exc, ArithmeticError | RuntimeError | ValueError):
                raise
            return False
        metrics = {k: v for k, v in outcome.best.metrics.items() if not k.startswith("confusion/")}
        value = outcome.best.metrics[self.metric]
        trial.set_user_attr("seconds", time.monotonic() - started)
        trial.set_user_attr("epochs_run", outcome.last.epoch)
        trial.set_user_attr("best_epoch", outcome.best.epoch)
        trial.set_user_attr("metrics", metrics)
        previous = self._best()
        improved = previous is None or (value, -metrics.get("loss", 0.0)) > (
            previous.value,
            -previous.user_attrs["metrics"].get("loss", 0.0),
        )
        if improved:
            shutil.move(outcome.best.path, folder / BEST_DIR)
        shutil.rmtree(folder / "checkpoints", ignore_errors=True)
        self.study.tell(trial, value)
        # Only after the study records it: every folder but the best trial's.
        best = self._best()
        keep = self.workdir / "trials" / str(best.number + 1) if best else None
        for other in (self.workdir / "trials").iterdir():
            if other != keep:
                shutil.rmtree(other, ignore_errors=True)
        note = " (best)" if improved else ""
        self._event(
            f"trial {number}/{of}: {describe(hp, names)}, best epoch {outcome.best.epoch} → "
            f"{self.metric} {value:.4f}{note}",
            {"trial": self._trial_data(self.study.trials[trial.number])},
        )
        self.faults.pause("trial")
        return True

    def _trial_data(self, trial: FrozenTrial) -> dict[str, Any]:
        best = self._best()
        attrs = trial.user_attrs
        hp = self.hp.model_copy(update=trial.params)
        value = (
            trial.value
            if trial.value is not None
            else trial.intermediate_values.get(max(trial.intermediate_values, default=0), 0.0)
        )
        return {
            "number": trial.number + 1,
            "state": STATE_NAMES.get(trial.state, "failed"),
            "hyperparameters": hp.model_dump(),
            "value": float(value if value is not None and math.isfinite(value) else 0.0),
            "epochs_run": int(attrs.get("epochs_run", 0)),
            "best_epoch": int(attrs.get("best_epoch", 0)),
            "metrics": dict(attrs.get("metrics", {})),
            "seconds": round(float(attrs.get("seconds", 0.0)), 2),
            "best": best is not None and best.number == trial.number,
        }

    def trials(self) -> list[dict[str, Any]]:
        """Every finished or failed trial, in order, as the result reports them."""
        return [self._trial_data(t) for t in self.study.trials if t.state in STATE_NAMES]


def data_max_length(
    task: Task,
    settings: Settings,
    rows: Sequence[Mapping[str, Any]],
    preprocessor: Any,
    hp: Hyperparameters,
) -> int:
    """max_length for a search: the 95th percentile of the training rows' token counts,
    rounded up to a multiple of 16, within search_max_length and the tokenizer's limit;
    the job's own max_length for tasks whose inputs have no length."""
    lengths = task.token_lengths(rows, preprocessor)
    if not lengths:
        return hp.max_length
    p95 = int(np.percentile(lengths, 95))
    model_limit = getattr(preprocessor, "model_max_length", None)
    limits = [settings.training.search_max_length]
    if isinstance(model_limit, int) and 0 < model_limit < 1_000_000:
        limits.append(model_limit)
    return max(16, min(-(-p95 // 16) * 16, *limits))


def checkpoint_of(outcome: SearchOutcome) -> Checkpoint:
    """The chosen trial's best checkpoint, as the publisher takes it."""
    return Checkpoint(outcome.best_epoch, 0, outcome.checkpoint, outcome.metrics)


def _span_attributes(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's hyperparameters as span attributes (numbers and strings only)."""
    return {
        f"edgetune.hp.{name}": value
        for name, value in params.items()
        if isinstance(value, int | float | str)
    }
