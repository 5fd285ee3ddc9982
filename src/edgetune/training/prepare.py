"""Checks a job's inputs before training: the base model and the data. No torch here, so
the server runs these to refuse a bad job before it is queued."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edgetune.errors import InvalidArgument
from edgetune.exporters.onnx import check_model_folder
from edgetune.store import ModelVersion, Repository
from edgetune.store.manifest import TRAINABLE_DIR
from edgetune.task import Task
from edgetune.training.datasets import DatasetStore, check_training_data, stratified_split
from edgetune.training.spec import JobSpec


def resolve_base(spec: JobSpec, repository: Repository) -> tuple[Path, ModelVersion | None]:
    """The transformers folder training starts from, and the repository version it is in
    (None for a base folder); InvalidArgument naming the field."""
    if spec.base_model:
        version = repository.resolve(spec.base_model, spec.base_version)
        folder = version.path / TRAINABLE_DIR
        if not (folder / "config.json").is_file():
            raise InvalidArgument(
                f"base_model: {version.name!r} version {version.version} keeps no trainable "
                "weights; start from its base folder instead"
            )
        return folder, version
    folder = Path(spec.base_path)
    if not folder.is_absolute():
        raise InvalidArgument(f"base_path {spec.base_path!r} must be an absolute path")
    check_model_folder(folder, f"base_path {spec.base_path!r}")
    return folder, None


def load_data(
    spec: JobSpec, task: Task, datasets: DatasetStore
) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]], list[str]]:
    """(train, validation, labels), checked; the split is seeded, so the same every time."""
    rows = datasets.rows(spec.dataset_id)
    if spec.validation_dataset_id:
        train_rows: list[Mapping[str, Any]] = list(rows)
        val_rows: list[Mapping[str, Any]] = list(datasets.rows(spec.validation_dataset_id))
    else:
        train_rows, val_rows = stratified_split(
            task, rows, spec.validation_split, spec.hyperparameters.seed
        )
    labels = check_training_data(task, train_rows, val_rows)
    return train_rows, val_rows, labels
