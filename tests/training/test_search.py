"""The hyperparameter search of a job, over gRPC with real training processes on the tiny
BERT: trials reported one by one, pruning, the retraining on all rows that is published,
the baseline on the same rows, cancel, kill -9 and resume, and every bad search field."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import grpc
import pytest
from fakes import sentiment_rows
from grpc import aio

from edgetune.plugins.text_classification import TextClassification
from edgetune.store import ModelRepository
from edgetune.training.spec import JobSpec, JobState
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

TASK = "text-classification"
ROWS = sentiment_rows(40, seed=3)
# Fixed (never searched): what makes a trial take a second on the tiny BERT.
FIXED = pb.Hyperparameters(batch_size=8, max_length=16)


@pytest.fixture
def finetuning(channel: aio.Channel) -> finetuning_pb2_grpc.FineTuningStub:
    return finetuning_pb2_grpc.FineTuningStub(channel)


def request(**fields) -> pb.CreateJobRequest:
    defaults = {
        "task": TASK,
        "base_model": pb.ModelRef(name="tiny"),
        "examples": pb.Examples(examples=[pb.Example(**r) for r in ROWS]),
        "model_name": "searched",
        "hyperparameters": FIXED,
    }
    return pb.CreateJobRequest(**{**defaults, **fields})


async def run_to_end(stub, job_request) -> tuple[pb.Job, list[pb.JobEvent]]:
    job = await stub.CreateJob(job_request)
    events = [e async for e in stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=300)]
    return await stub.GetJob(pb.GetJobRequest(id=job.id)), events


async def test_a_search_reports_its_trials_and_publishes_the_retrained_choice(
    finetuning, settings
) -> None:
    search = pb.Search(
        trials=3,
        time_budget_minutes=30,  # not the default budget (2x trial 1): all 3 trials run
        space={
            "learning_rate": pb.Range(low=1e-3, high=5e-3),
            "epochs": pb.Range(low=1, high=2),
        },
    )
    job, events = await run_to_end(finetuning, request(search=search))
    messages = [e.message for e in events]
    assert job.state == pb.JOB_STATE_SUCCEEDED, (job.error, messages)
    assert job.search.trials == 3

    # Every trial is an event with its hyperparameters and its score.
    finished = [e.trial for e in events if e.trial.number]
    assert [t.number for t in finished] == [1, 2, 3]
    for trial in finished:
        assert trial.state in (pb.TRIAL_STATE_COMPLETE, pb.TRIAL_STATE_PRUNED)
        assert 1e-3 <= trial.hyperparameters.learning_rate <= 5e-3
        assert trial.hyperparameters.batch_size == 8  # fixed, never searched
    assert any(m.startswith("trial 2/3: lr ") and "→ f1" in m for m in messages), messages
    progress = [e.progress for e in events if e.progress.total_steps]
    assert {p.trial for p in progress if p.trial} == {1, 2, 3}
    assert all(p.trials == 3 for p in progress if p.trial)

    result = job.result
    assert [t.number for t in result.trials] == [1, 2, 3]
    chosen = [t for t in result.trials if t.best]
    assert len(chosen) == 1 and chosen[0].state == pb.TRIAL_STATE_COMPLETE
    best = chosen[0]
    assert best.value == max(t.value for t in result.trials if t.state == pb.TRIAL_STATE_COMPLETE)
    assert result.estimated_metrics["f1"] == pytest.approx(best.metrics["f1"])

    # The published model is the retraining on all 40 rows with the chosen configuration,
    # for its epochs (5 steps an epoch at batch 8), whichever epoch was best in its trial.
    assert any("retraining the chosen configuration on all 40 labelled rows" in m for m in messages)
    refit = [p for p in progress if not p.trial]
    assert refit and refit[-1].total_steps == best.hyperparameters.epochs * 5
    assert result.hyperparameters.learning_rate == pytest.approx(best.hyperparameters.learning_rate)
    assert result.hyperparameters.epochs == best.hyperparameters.epochs
    assert "retrained on all 40 labelled rows" in result.selection
    manifest = ModelRepository(settings.models_dir).get("searched", 1).manifest
    assert manifest.training["hyperparameters"]["learning_rate"] == pytest.approx(
        best.hyperparameters.learning_rate
    )
    assert [t["number"] for t in manifest.training["trials"]] == [1, 2, 3]
    assert manifest.training["baseline"]["metrics"]["f1"] == pytest.approx(
        result.baseline.metrics["f1"]
    )
    assert not (settings.jobs_dir / job.id).exists()


@pytest.mark.settings(search_trial_max_length=8)
async def test_trials_see_shorter_inputs_than_the_retraining_that_is_published(
    finetuning, settings
) -> None:
    search = pb.Search(trials=2, time_budget_minutes=30, space={"epochs": pb.Range(low=1, high=2)})
    job, events = await run_to_end(
        finetuning, request(search=search, hyperparameters=pb.Hyperparameters(batch_size=8))
    )
    messages = [e.message for e in events]
    assert job.state == pb.JOB_STATE_SUCCEEDED, (job.error, messages)
    result = job.result
    data_length = result.hyperparameters.max_length  # picked from the rows' token counts
    assert data_length >= 16
    assert (
        f"trials see the first 8 tokens of each input; the retraining on all rows, {data_length}"
        in messages
    )
    assert [t.hyperparameters.max_length for t in result.trials] == [8, 8]
    assert "retrained on all 40 labelled rows" in result.selection
    assert "before retraining (at 8 tokens)" in result.selection
    manifest = ModelRepository(settings.models_dir).get("searched", 1).manifest
    assert manifest.training["hyperparameters"]["max_length"] == data_length
    assert [t["hyperparameters"]["max_length"] for t in manifest.training["trials"]] == [8, 8]


async def test_the_baseline_is_scored_on_the_validation_rows_of_the_transformer(
    finetuning, settings, plugins
) -> None:
    job, events = await run_to_end(finetuning, request(search=pb.Search(trials=1)))
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert not job.result.trials  # trials=1: a single run, no search
    baseline = job.result.baseline
    assert "logistic regression" in baseline.description
    assert {"accuracy", "precision", "recall", "f1"} <= set(baseline.metrics)
    reported = [e.baseline for e in events if e.baseline.description]
    assert len(reported) == 1 and "validation rows" in next(
        e.message for e in events if e.baseline.description
    )
    # By construction: the job's own split (load_data) fed to the same hook gives the same
    # figures, and that split's validation rows are the ones the transformer is scored on.
    from edgetune.training.datasets import DatasetStore
    from edgetune.training.prepare import load_data

    stored = DatasetStore(settings.datasets_dir, plugins, settings.limits.max_dataset_bytes)
    spec = JobSpec(task=TASK, dataset_id=job.dataset_id, model_name="x", base_model="tiny")
    train, validation, labels = load_data(spec, plugins.task(TASK), stored)
    assert len(validation) == 8 and any("validating on 8" in e.message for e in events)
    again = TextClassification().baseline(train, validation, labels)
    for name in ("accuracy", "f1", "precision", "recall"):
        assert baseline.metrics[name] == pytest.approx(again.metrics[name])
    counts = sum(v for k, v in again.metrics.items() if k.startswith("confusion/"))
    assert counts == len(validation)


def test_a_trial_below_the_median_of_the_trials_before_it_is_pruned(tmp_path: Path) -> None:
    # The tiny BERT learns too erratically for a pruning test through a job, so this drives
    # the search's reporter with a real study and its pruner (as the training loop does
    # after each epoch) and checks which trial it stops, and when.
    import optuna

    from edgetune.settings import Settings
    from edgetune.training.jobstore import JobStore
    from edgetune.training.search import Search
    from edgetune.training.spec import Hyperparameters, SearchSpec

    settings = Settings(home=tmp_path)
    settings.jobs_dir.mkdir(parents=True)
    store = JobStore(settings.jobs_dir / "jobs.db")
    job, _ = store.create(
        JobSpec(task=TASK, dataset_id="ds", model_name="m", base_model="tiny"),
        JobState.RUNNING,
        "x",
        9,
    )
    search = Search(
        job_context(job, settings, store, tmp_path),
        SearchSpec(trials=4),
        Hyperparameters(),
        TextClassification(),
    )
    curves = [[0.5, 0.7, 0.8], [0.4, 0.9, 0.95], [0.6, 0.8, 0.9], [0.55, 0.6, 0.99]]
    stopped = []
    for curve in curves:
        trial = search.study.ask(search.space)
        reporter = search_reporter(search, store, job.id, trial)
        try:
            for epoch, f1 in enumerate(curve, start=1):
                reporter.evaluated(epoch, {"f1": f1}, best=False)
        except optuna.TrialPruned:
            search.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            stopped.append((trial.number + 1, reporter.epochs_run))
        else:
            search.study.tell(trial, max(curve))
    # Trial 1 always finishes and is the reference: trial 2 is below it at epoch 1 (0.4 <
    # 0.5); trial 3 is above it and finishes; trial 4 ties the median of trials 1 and 3
    # at epoch 1 (0.55) and falls below it at epoch 2 (0.6 < 0.75).
    assert stopped == [(2, 1), (4, 2)]


async def test_a_trial_with_a_perfect_score_ends_the_search(finetuning) -> None:
    # One word decides the label: the tiny BERT separates the two in its first epochs.
    rows = [{"text": "good", "label": "positive"}, {"text": "bad", "label": "negative"}] * 20
    search = pb.Search(
        trials=3,
        time_budget_minutes=30,  # not the default budget: only the perfect score stops it
        space={"learning_rate": pb.Range(low=5e-3, high=1e-2), "epochs": pb.Range(low=2, high=3)},
    )
    examples = pb.Examples(examples=[pb.Example(**r) for r in rows])
    job, events = await run_to_end(finetuning, request(search=search, examples=examples))
    messages = [e.message for e in events]
    assert job.state == pb.JOB_STATE_SUCCEEDED, (job.error, messages)
    assert [(t.number, t.value) for t in job.result.trials] == [(1, 1.0)]
    assert (
        "trial 1 scored a perfect f1 on the 8 validation rows: no configuration can rank "
        "above it there, so the search stops" in messages
    )


def job_context(job, settings, store, workdir):
    """A JobContext for driving a Search directly (no data sets or repository are read)."""
    from edgetune.training.context import JobContext

    return JobContext(job, settings, store, None, None, None, workdir, lambda: False)


def test_a_search_whose_trials_all_fail_gives_up(tmp_path: Path) -> None:
    from edgetune.settings import Settings
    from edgetune.training.jobstore import JobStore
    from edgetune.training.search import MAX_FAILURES, Search
    from edgetune.training.spec import Hyperparameters, SearchSpec

    settings = Settings(home=tmp_path)
    settings.jobs_dir.mkdir(parents=True)
    store = JobStore(settings.jobs_dir / "jobs.db")
    job, _ = store.create(
        JobSpec(task=TASK, dataset_id="ds", model_name="m", base_model="tiny"),
        JobState.RUNNING,
        "x",
        9,
    )
    search = Search(
        job_context(job, settings, store, tmp_path),
        SearchSpec(trials=6),
        Hyperparameters(),
        TextClassification(),
    )
    built = []

    def build_model():
        built.append(1)
        if len(built) > 10:  # a search that never gives up would get here
            raise KeyError("the search did not stop")
        raise RuntimeError("the model cannot be built")

    with pytest.raises(RuntimeError, match="every trial of the search failed"):
        search.run(build_model, None, [], [], ["a", "b"])
    assert len(built) == MAX_FAILURES
    assert any("trials failed; the search stops" in e.message for e in store.events(job.id))


def search_reporter(search, store, job_id, trial):
    from edgetune.training.search import TrialReporter

    return TrialReporter(store, job_id, trial, search.search.trials, search.metric)


async def test_a_default_job_searches_and_hyperparameters_alone_mean_one_run(
    finetuning,
) -> None:
    default = await finetuning.CreateJob(request(hyperparameters=None, model_name="d"))
    single = await finetuning.CreateJob(request(model_name="s"))
    try:
        assert default.search.trials == 6
        assert single.search.trials == 1
    finally:
        for job in (default, single):
            await finetuning.CancelJob(pb.CancelJobRequest(id=job.id))


async def test_no_trial_starts_once_the_time_budget_is_spent(finetuning) -> None:
    search = pb.Search(trials=4, time_budget_minutes=1e-6)  # spent by any trial
    job, events = await run_to_end(finetuning, request(search=search))
    assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
    assert [t.number for t in job.result.trials] == [1]
    assert any("time budget of 0.0 min spent after 1 trials" in e.message for e in events)


BAD_SEARCHES = [
    (pb.Search(metric="loss"), "search.metric 'loss' is not one of the metrics"),
    (pb.Search(metric="x" * 5000), "search.metric 'xxxxxxxx"),
    (pb.Search(time_budget_minutes=-1), "search.time_budget_minutes"),
    (pb.Search(time_budget_minutes=math.nan), "search.time_budget_minutes"),
    (pb.Search(trials=1000), "search.trials"),
    (
        pb.Search(space={"learning_rate": pb.Range(low=1e-3, high=1e-4)}),
        "search.space['learning_rate']: the range is empty or inverted",
    ),
    (
        pb.Search(space={"learning_rate": pb.Range()}),
        "search.space['learning_rate']: the range is empty",
    ),
    (
        pb.Search(space={"epochs": pb.Range(low=2, high=2)}),
        "search.space['epochs']: the range is empty",
    ),
    (
        pb.Search(space={"epochs": pb.Range(low=1.5, high=3)}),
        "search.space['epochs']: 1.5 is not a whole number",
    ),
    (pb.Search(space={"batch_size": pb.Range(choices=[8, 0])}), "search.space['batch_size']: 0:"),
    (
        pb.Search(space={"warmup_ratio": pb.Range(low=0, high=2)}),
        "search.space['warmup_ratio']: 2:",
    ),
    (pb.Search(space={"batch_size": pb.Range(low=8, high=16, choices=[8])}), "not both"),
    (
        pb.Search(space={"dropout": pb.Range(low=0, high=0.5)}),
        "search.space['dropout']: not a hyperparameter a search varies",
    ),
]


@pytest.mark.parametrize(("search", "message"), BAD_SEARCHES)
async def test_bad_search_fields_are_refused_by_name(finetuning, search, message) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await finetuning.CreateJob(request(search=search))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()
    assert len(caught.value.details()) < 500


async def test_cancel_during_a_search_ends_it_at_once(tmp_path: Path, seeded_models) -> None:
    from faults.server_process import ServerProcess, watch_until

    home = tmp_path / "home"
    shutil.copytree(seeded_models, home / "models")
    server = ServerProcess(home).start(EDGETUNE_TEST_FAULT="pause@trial")
    try:
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            job = stub.CreateJob(request(search=pb.Search(trials=4)))
            watch_until(channel, job.id, "test fault: paused at trial")
            cancelled = stub.CancelJob(pb.CancelJobRequest(id=job.id))
            assert cancelled.state == pb.JOB_STATE_CANCELLED
            events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=60))
        assert not [e for e in events if e.message.startswith("trial 2/4")]
        assert not ModelRepository(home / "models").versions("searched")
        assert not (home / "jobs" / job.id).exists()
    finally:
        server.stop()


def test_kill_9_during_a_search_resumes_from_the_finished_trials(
    tmp_path: Path, seeded_models
) -> None:
    from faults.server_process import ServerProcess, alive, wait_gone, watch_until

    from edgetune.training.jobstore import JobStore

    home = tmp_path / "home"
    shutil.copytree(seeded_models, home / "models")
    server = ServerProcess(home).start(EDGETUNE_TEST_FAULT="pause@trial")
    try:
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            job = stub.CreateJob(
                request(search=pb.Search(trials=3, time_budget_minutes=30), auto_promote=True)
            )
            before = watch_until(channel, job.id, "test fault: paused at trial")
        first = next(e.trial for e in before if e.trial.number == 1)
        worker = JobStore(home / "jobs" / "jobs.db").get(job.id).pid
        server.kill9()
        assert wait_gone(worker), "the training process outlived its server"

        server.start()  # without the fault
        with server.channel() as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            events = list(stub.WatchJob(pb.WatchJobRequest(id=job.id), timeout=300))
            final = stub.GetJob(pb.GetJobRequest(id=job.id))
        messages = [e.message for e in events]
        assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, messages)
        assert any("resuming the search after 1 finished trials" in m for m in messages)
        # Trial 1 ran once: the study kept it, with the same hyperparameters and score.
        assert [e.trial.number for e in events if e.trial.number] == [1, 2, 3]
        assert sum(m.startswith("trial 1/3: lr") and "→" not in m for m in messages) == 1
        kept = final.result.trials[0]
        assert kept.value == pytest.approx(first.value)
        assert kept.hyperparameters.learning_rate == pytest.approx(
            first.hyperparameters.learning_rate
        )
        assert [t.number for t in final.result.trials] == [1, 2, 3]
        assert final.result.promoted and not alive(worker)
    finally:
        server.stop()


async def test_a_large_data_set_publishes_the_chosen_trials_model(settings, plugins) -> None:
    from edgetune.server.app import start_server

    settings = settings.replace(
        search_refit_rows=0
    )  # every data set counts as large: no retraining
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = finetuning_pb2_grpc.FineTuningStub(channel)
            search = pb.Search(trials=2, time_budget_minutes=30)
            job, events = await run_to_end(stub, request(search=search))
        assert job.state == pb.JOB_STATE_SUCCEEDED, job.error
        assert not job.result.retrained
        assert "published that trial's model" in job.result.selection
        assert not any("retraining" in e.message for e in events)
        best = next(t for t in job.result.trials if t.best)
        # The published model is that trial's best checkpoint: its fp32 export scores
        # what the trial scored on the same validation rows (one row may flip on rounding).
        assert abs(job.result.fp32_metrics["accuracy"] - best.metrics["accuracy"]) <= 1 / 8 + 1e-9
        assert not (settings.jobs_dir / job.id).exists()
    finally:
        await running.stop(0)
