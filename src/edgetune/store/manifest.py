"""manifest.json: what a model version is, written once when the version is published."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgetune.errors import ModelLoadError

MANIFEST_NAME = "manifest.json"
MODEL_FILE = "model.onnx"
TRAINABLE_DIR = "trainable"
"""Subfolder with the safetensors weights and tokenizer a version keeps for later fine-tuning."""
SCHEMA_VERSION = 1


def utc_now() -> str:
    """The current time as RFC 3339 UTC, seconds precision."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Manifest(BaseModel):
    """Everything the server needs to know about a model version besides its files."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    task: str
    """Name of the task plugin that serves (and trained) this model."""
    labels: list[str] = Field(min_length=1)
    """Label names in the order of the model's output."""
    base_model: str = ""
    """The folder or model the weights came from."""
    format: str = "onnx-fp32"
    """Weight format of model.onnx: onnx-fp32, onnx-int8, ..."""
    files: dict[str, str] = Field(default_factory=dict)
    """sha256 of every file in the version folder, manifest excluded."""
    metrics: dict[str, float] = Field(default_factory=dict)
    """Metrics measured when the version was made."""
    sizes: dict[str, int] = Field(default_factory=dict)
    """Size in bytes of every file in the version folder, manifest excluded."""
    task_options: dict[str, Any] = Field(default_factory=dict)
    """Task-specific serving options (max sequence length, thresholds, ...)."""
    training: dict[str, Any] = Field(default_factory=dict)
    """How the version was made: job, data set, hyperparameters, accuracy-gate decision."""
    created: str = Field(default_factory=utc_now)
    """Creation time, RFC 3339 UTC."""

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        """Read and validate `folder/manifest.json`."""
        path = folder / MANIFEST_NAME
        try:
            return cls.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            raise ModelLoadError(f"{path}: manifest.json is missing") from None
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "manifest"
            raise ModelLoadError(f"{path}: field {where!r}: {first['msg']}") from None

    def write(self, folder: Path) -> None:
        """Write `folder/manifest.json`."""
        (folder / MANIFEST_NAME).write_text(self.model_dump_json(indent=2) + "\n")

    def record_files(self, folder: Path) -> None:
        """Fill `files` and `sizes` for every regular file under folder."""
        paths = [p for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST_NAME]
        self.files = {str(p.relative_to(folder)): sha256_of(p) for p in paths}
        self.sizes = {str(p.relative_to(folder)): p.stat().st_size for p in paths}

    def served_files(self) -> list[str]:
        """Files the server reads: model.onnx and the top-level tokenizer / config files
        (not the fp32 copy or the trainable weights kept for later fine-tuning)."""
        return [
            name
            for name in self.files
            if "/" not in name and (name == MODEL_FILE or not name.endswith(".onnx"))
        ]

    def verify_files(self, folder: Path, names: list[str] | None = None) -> None:
        """Raise ModelLoadError when a listed file (of names; default all) is missing or
        its sha256 differs."""
        if MODEL_FILE not in self.files:
            raise ModelLoadError(f"{folder}: manifest lists no {MODEL_FILE}")
        root = folder.resolve()
        names = list(self.files) if names is None else names
        for name in self.files:
            if not (folder / name).resolve().is_relative_to(root):
                raise ModelLoadError(f"{folder}: manifest file {name!r} points outside the folder")
        for name in names:
            expected = self.files[name]
            path = folder / name
            if not path.is_file():
                raise ModelLoadError(f"{folder}: {name} is missing")
            if sha256_of(path) != expected:
                raise ModelLoadError(f"{folder}: {name} does not match its sha256 in the manifest")
