"""Optimum ONNX export, and `import_model`: a local transformers folder -> a new version.

Imports torch, transformers and optimum lazily: this runs in the CLI or a job process,
never on the serving path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetune.errors import InvalidArgument, quoted
from edgetune.store import Manifest, ModelVersion, Repository
from edgetune.store.manifest import TRAINABLE_DIR
from edgetune.task import Task

log = logging.getLogger(__name__)

# Files the serving side may read; everything else Optimum or transformers writes is dropped.
SERVED_SUFFIXES = (".onnx", ".json", ".txt", ".model")


def export_onnx(task: Task, model: Any, preprocessor: Any, out_dir: Path) -> None:
    """Export model with Optimum for task.optimum_task, save its preprocessor beside it, and
    keep its safetensors weights under trainable/ so the version can be fine-tuned later."""
    from optimum.exporters.onnx import onnx_export_from_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model.eval()
    onnx_export_from_model(model, out_dir, task=task.optimum_task, do_validation=False)
    preprocessor.save_pretrained(out_dir)
    for path in out_dir.iterdir():
        if path.is_file() and not path.name.endswith(SERVED_SUFFIXES):
            path.unlink()
    model.save_pretrained(out_dir / TRAINABLE_DIR, safe_serialization=True)
    preprocessor.save_pretrained(out_dir / TRAINABLE_DIR)


def labels_from_config(source: Path) -> list[str]:
    """Label names from config.json's id2label, when the folder sets them explicitly."""
    try:
        config = json.loads((source / "config.json").read_text())
    except FileNotFoundError:
        raise InvalidArgument(
            f"{source}: config.json is missing; is it a transformers model folder?"
        ) from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"{source}/config.json is not valid JSON: {exc}") from None
    id2label = config.get("id2label") or {}
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def check_model_folder(folder: Path, what: str) -> None:
    """A transformers folder edgetune may load: config.json and safetensors weights.

    Pickle checkpoints (pytorch_model.bin, *.pt, *.ckpt) can run code when loaded, so a
    folder that only has those is refused instead of unpickled.

    :param what: how errors name the folder, e.g. "base_path '/models/x'".
    """
    if not folder.is_dir():
        raise InvalidArgument(f"{what}: not a folder")
    if not (folder / "config.json").is_file():
        raise InvalidArgument(f"{what} is not a transformers model folder (no config.json)")
    if not any(folder.glob("*.safetensors")):
        raise InvalidArgument(
            f"{what} has no safetensors weights; pickle checkpoints (.bin, .pt) are never "
            "loaded: save the model with save_pretrained(safe_serialization=True)"
        )


def import_model(
    repository: Repository,
    task: Task,
    name: str,
    source: Path,
    labels: Sequence[str] = (),
    aliases: tuple[str, ...] = ("latest",),
    max_length: int | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> ModelVersion:
    """Build task's model from a local transformers folder, export it to ONNX and publish it.

    :param labels: label names; when empty they come from the folder's config.json id2label.
    :param descriptions: label -> what it means, for a task that builds a model from them
        (`Task.build_model_from_descriptions`, e.g. a zero-shot classifier); None or empty
        builds with `Task.build_model`.
    :param max_length: tokens per input when serving; default: what the model takes.
    :raises InvalidArgument: the folder is not a model folder or no labels are known.
    """
    check_model_folder(source, str(source))
    labels = list(labels) or labels_from_config(source)
    if not labels:
        raise InvalidArgument(
            f"{source}: config.json names no labels (id2label); pass them with --labels"
        )
    for index, label in enumerate(labels):
        if label in labels[:index]:
            raise InvalidArgument(f"labels[{index}]: label {quoted(label)} is given twice")
    preprocessor = task.load_preprocessor(source)
    if descriptions:
        model = task.build_model_from_descriptions(source, labels, descriptions)
    else:
        model = task.build_model(source, labels)
    with repository.staging() as staged:
        log.info("exporting %s to ONNX for task %s", source, task.name)
        export_onnx(task, model, preprocessor, staged)
        manifest = Manifest(
            task=task.name,
            labels=labels,
            base_model=str(source.resolve()),
            format="onnx-fp32",
            task_options=task.task_options(model, preprocessor, max_length),
        )
        return repository.publish(name, staged, manifest, aliases)
