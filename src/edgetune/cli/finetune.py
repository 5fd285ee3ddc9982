"""`edgetune finetune` and `edgetune jobs`: gRPC clients for the FineTuning service, with a
live progress bar and a final metrics table."""

from __future__ import annotations

import argparse
import hashlib
import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from edgetune.cli.common import client_channel, state_name
from edgetune.errors import InvalidArgument
from edgetune.store.manifest import sha256_of
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, models_pb2, models_pb2_grpc

CHUNK = 1 << 20
FINAL = {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
console = Console(highlight=False)


def upload(
    stub: finetuning_pb2_grpc.FineTuningStub, path: Path, task: str, timeout: float
) -> pb.Dataset:
    """Stream a data-set file to the server in 1 MiB chunks, to be checked for task."""
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such file")

    def messages() -> Iterator[pb.UploadDatasetRequest]:
        yield pb.UploadDatasetRequest(header=pb.DatasetHeader(filename=path.name, task=task))
        with path.open("rb") as f:
            while chunk := f.read(CHUNK):
                yield pb.UploadDatasetRequest(chunk=chunk)

    dataset: pb.Dataset = stub.UploadDataset(messages(), timeout=timeout)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(dataset.label_counts.items()))
    console.print(f"uploaded {path.name}: {dataset.rows} rows ({counts}) as {dataset.id}")
    return dataset


def upload_base(stub: finetuning_pb2_grpc.FineTuningStub, folder: Path, timeout: float) -> str:
    """Upload a local transformers folder as a base (its safetensors, JSON, text and
    sentencepiece files; pickle weights beside them stay behind); its name on the server.
    The name is derived from the contents, so uploading the same folder again reuses it."""
    from edgetune.training.bases import ALLOWED_SUFFIXES

    if not folder.is_dir():
        raise InvalidArgument(f"{folder}: not a folder")
    files = sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(ALLOWED_SUFFIXES)
    )
    declared = [
        pb.BaseFile(name=p.name, size_bytes=p.stat().st_size, sha256=sha256_of(p)) for p in files
    ]
    digest = hashlib.sha256("\n".join(f"{f.name} {f.sha256}" for f in declared).encode())
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", folder.name).strip(".-_")[:100] or "base"
    name = f"{stem}-{digest.hexdigest()[:12]}"
    existing = stub.ListBases(pb.ListBasesRequest(), timeout=timeout)
    if any(base.name == name for base in existing.bases):
        console.print(f"base {name} is on the server already (same files)")
        return name

    def messages() -> Iterator[pb.UploadBaseRequest]:
        yield pb.UploadBaseRequest(header=pb.BaseHeader(name=name, files=declared))
        for path in files:
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield pb.UploadBaseRequest(chunk=pb.BaseChunk(file=path.name, data=chunk))

    base: pb.Base = stub.UploadBase(messages())
    console.print(f"uploaded {folder} as base {base.name} ({base.size_bytes / 2**20:.1f} MiB)")
    return base.name


def _create_job(
    stub: finetuning_pb2_grpc.FineTuningStub,
    request: pb.CreateJobRequest,
    folder: Path | None,
    timeout: float,
) -> pb.Job:
    """CreateJob; a base folder the server refuses to read (another machine, outside its
    base folders) is uploaded, and the job created again from the uploaded copy."""
    try:
        job: pb.Job = stub.CreateJob(request, timeout=timeout)
        return job
    except grpc.RpcError as exc:
        refused = exc.code() == grpc.StatusCode.INVALID_ARGUMENT and str(exc.details()).startswith(
            "base_path"
        )
        if folder is None or not refused:
            raise
        console.print(f"the server cannot use {folder} itself ({exc.details()}); uploading it")
    request.base_path = upload_base(stub, folder, timeout)
    job = stub.CreateJob(request, timeout=timeout)
    return job


def cmd_finetune(args: argparse.Namespace) -> int:
    """Upload data, start a fine-tuning job and follow it to the end."""
    hyper = pb.Hyperparameters(
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        max_length=args.max_length,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        seed=args.seed,
        early_stopping_patience=args.patience,
    )
    with client_channel(args) as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        request = pb.CreateJobRequest(
            model_name=args.name,
            hyperparameters=hyper,
            auto_promote=not args.no_promote,
            idempotency_key=args.idempotency_key,
        )
        if args.trials or args.time_budget or args.search_metric:
            request.search.CopyFrom(
                pb.Search(
                    trials=args.trials,
                    time_budget_minutes=args.time_budget,
                    metric=args.search_metric,
                )
            )
        task = args.task
        if args.base_model:
            name, _, version = args.base_model.partition(":")
            request.base_model.CopyFrom(pb.ModelRef(name=name, version=version))
            if not task:  # continue the base model's task
                base = models_pb2_grpc.ModelsStub(channel).GetModel(
                    models_pb2.GetModelRequest(name=name, version=version), timeout=args.timeout
                )
                task = base.task
        else:
            if not task:
                raise InvalidArgument("--task is required with --base (see `edgetune plugins`)")
            request.base_path = str(Path(args.base).resolve())
        folder = Path(args.base).resolve() if args.base else None
        request.task = task
        request.dataset_id = upload(stub, Path(args.data), task, args.timeout).id
        if args.validation:
            request.validation_dataset_id = upload(
                stub, Path(args.validation), task, args.timeout
            ).id
        elif args.validation_split:
            request.validation_split = args.validation_split
        job = _create_job(stub, request, folder, args.timeout)
        console.print(f"job {job.id}: {state_name(job.state)}")
        if args.detach:
            return 0
        return follow(stub, job.id)


def follow(stub: finetuning_pb2_grpc.FineTuningStub, job_id: str) -> int:
    """Print a job's events with a live progress bar; 0 when it succeeded."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=console)
    trials: list[pb.Trial] = []

    def view() -> RenderableType:
        return Group(bar, trial_table(trials)) if trials else bar

    with Live(view(), console=console, transient=True, refresh_per_second=4) as live:
        task = bar.add_task("waiting", total=None, loss="-")
        for event in stub.WatchJob(pb.WatchJobRequest(id=job_id)):
            if event.progress.total_steps:
                p = event.progress
                where = f"trial {p.trial}/{p.trials} " if p.trial else ""
                bar.update(
                    task,
                    total=p.total_steps,
                    completed=p.step,
                    loss=f"{p.loss:.4f}",
                    description=f"{where}epoch {p.epoch}/{p.epochs}",
                )
            else:
                if event.trial.number:
                    trials.append(event.trial)
                live.console.print(
                    f"[dim]{event.time}[/dim] {state_name(event.state):10} {event.message}"
                )
            live.update(view())
    job = stub.GetJob(pb.GetJobRequest(id=job_id))
    show(job)
    return 0 if job.state == pb.JOB_STATE_SUCCEEDED else 1


def show(job: pb.Job) -> None:
    """A job's summary and, when it published a model, its metrics table."""
    console.print(
        f"job {job.id}: {state_name(job.state)}  model {job.model_name}  base {job.base_model}"
    )
    if job.error:
        console.print(f"[red]error:[/red] {job.error}")
    result = job.result
    if not result.version:
        return
    table = Table(title=f"{result.model_name} version {result.version} ({result.format})")
    table.add_column("metric")
    table.add_column("fp32", justify="right")
    table.add_column("int8", justify="right")
    for name in sorted(result.fp32_metrics):
        if name.startswith("confusion/"):
            continue
        int8 = result.int8_metrics.get(name)
        table.add_row(
            name, f"{result.fp32_metrics[name]:.4f}", "-" if int8 is None else f"{int8:.4f}"
        )
    console.print(table)
    served = result.int8_metrics if result.format == "onnx-int8" else result.fp32_metrics
    confusion = confusion_table(served)
    if confusion is not None:
        console.print(confusion)
    if result.trials:
        console.print(trial_table(list(result.trials)))
    if result.baseline.description and (result.estimated_metrics or not result.retrained):
        console.print(baseline_table(result, served))
    if result.selection:
        console.print(f"selection: {result.selection}")
    if result.comparison:
        console.print(f"[bold]{result.comparison}[/bold]")
    if result.previous_comparison:
        console.print(f"against the version it started from: {result.previous_comparison}")
    console.print(f"gate: {result.gate}")
    console.print(
        f"model.onnx {result.size_bytes / 1e6:.1f} MB, single-input latency "
        f"{result.latency_ms:.2f} ms, promoted: {'yes' if result.promoted else 'no'}"
    )


TRIAL_STATE = {
    pb.TRIAL_STATE_COMPLETE: "complete",
    pb.TRIAL_STATE_PRUNED: "pruned",
    pb.TRIAL_STATE_FAILED: "failed",
}


def trial_table(trials: list[pb.Trial]) -> Table:
    """The search's trials, one row each, the chosen one marked."""
    table = Table(title="hyperparameter search")
    for name in ("trial", "state", "lr", "batch", "epochs", "warm-up", "decay", "score", "s"):
        table.add_column(name, justify="right" if name not in ("state",) else "left")
    for t in trials:
        hp = t.hyperparameters
        table.add_row(
            f"{t.number}{' *' if t.best else ''}",
            TRIAL_STATE.get(t.state, "?"),
            f"{hp.learning_rate:.1e}",
            str(hp.batch_size),
            f"{t.best_epoch or '-'}/{t.epochs_run}",
            f"{hp.warmup_ratio:.2f}",
            f"{hp.weight_decay:.3f}",
            f"{t.value:.4f}",
            f"{t.seconds:.0f}",
        )
    return table


def baseline_table(result: pb.JobResult, served: Mapping[str, float]) -> Table:
    """Fine-tuned against the baseline on the same validation rows, with the difference:
    the served model's figures, or the search's estimate when the published model was
    retrained on the validation rows too."""
    ours = result.estimated_metrics if result.retrained else served
    label = "fine-tuned (chosen trial)" if result.retrained else f"fine-tuned {result.format[5:]}"
    table = Table(title=f"{label} vs baseline ({result.baseline.description})")
    table.add_column("metric")
    table.add_column(label, justify="right")
    table.add_column("baseline", justify="right")
    table.add_column("difference", justify="right")
    for name in ("accuracy", "precision", "recall", "f1"):
        if name in ours and name in result.baseline.metrics:
            mine, theirs = ours[name], result.baseline.metrics[name]
            table.add_row(
                name, f"{mine:.4f}", f"{theirs:.4f}", f"{(mine - theirs) * 100:+.2f} points"
            )
    return table


def confusion_table(metrics: Mapping[str, float]) -> Table | None:
    """The confusion matrix in "confusion/<actual>/<predicted>" metrics, as a table."""
    cells = {}
    for name, count in metrics.items():
        if name.startswith("confusion/"):
            actual, _, predicted = name.removeprefix("confusion/").partition("/")
            cells[actual, predicted] = int(count)
    if not cells:
        return None
    labels = sorted({actual for actual, _ in cells})
    table = Table(title="validation confusion matrix (rows: actual, columns: predicted)")
    table.add_column("")
    for label in labels:
        table.add_column(label, justify="right")
    for actual in labels:
        table.add_row(actual, *(str(cells.get((actual, p), 0)) for p in labels))
    return table


def cmd_jobs(args: argparse.Namespace) -> int:
    """List, show, watch or cancel fine-tuning jobs."""
    with client_channel(args) as channel:
        stub = finetuning_pb2_grpc.FineTuningStub(channel)
        if args.action == "list":
            states = [pb.JobState.Value(f"JOB_STATE_{s.upper()}") for s in args.state]
            reply = stub.ListJobs(
                pb.ListJobsRequest(states=states, page_size=args.limit), timeout=args.timeout
            )
            console.print(f"{'JOB':26} {'STATE':10} {'MODEL':20} {'VERSION':>7}  CREATED")
            for job in reply.jobs:
                console.print(
                    f"{job.id:26} {state_name(job.state):10} {job.model_name:20} "
                    f"{job.result.version or '-':>7}  {job.created}"
                )
            return 0
        if not args.id:
            raise InvalidArgument(f"jobs {args.action} needs a job id")
        if args.action == "show":
            show(stub.GetJob(pb.GetJobRequest(id=args.id), timeout=args.timeout))
        elif args.action == "watch":
            return follow(stub, args.id)
        else:
            job = stub.CancelJob(pb.CancelJobRequest(id=args.id), timeout=args.timeout)
            console.print(f"job {job.id}: {state_name(job.state)}")
    return 0
