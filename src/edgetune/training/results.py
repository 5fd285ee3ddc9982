"""What a job published, read back from the repository: a job's result is its version's
manifest. Light (no torch), so the server's job manager uses it too."""

from __future__ import annotations

from typing import Any

from edgetune.errors import EdgetuneError
from edgetune.store import ModelVersion, Repository

REPORT_KEYS = (
    "baseline",
    "trials",
    "selection",
    "estimated_metrics",
    "retrained",
    "comparison",
    "previous_metrics",
    "previous_comparison",
)
"""What a job's manifest (training section) and result say beside the metrics."""


def find_published(repository: Repository, name: str, job_id: str) -> ModelVersion | None:
    """The version of model name that job_id published, if there is one."""
    for number in reversed(repository.versions(name)):
        try:
            version = repository.describe(name, number)  # the manifest is enough
        except EdgetuneError:
            continue  # not readable: not one this job published (that rename was atomic)
        if version.manifest.training.get("job") == job_id:
            return version
    return None


def result_of(version: ModelVersion) -> dict[str, Any]:
    """A job's result for the version it published, from the version's manifest."""
    metrics = version.manifest.metrics
    training = version.manifest.training
    return {
        "model_name": version.name,
        "version": str(version.version),
        "format": version.manifest.format,
        "fp32_metrics": {k[5:]: v for k, v in metrics.items() if k.startswith("fp32.")},
        "int8_metrics": {k[5:]: v for k, v in metrics.items() if k.startswith("int8.")},
        "gate": version.manifest.training.get("gate", ""),
        "size_bytes": version.model_file_bytes,
        "latency_ms": metrics.get("latency_ms", 0.0),
        "promoted": False,
        "hyperparameters": dict(training.get("hyperparameters", {})),
        **{key: training[key] for key in REPORT_KEYS if key in training},
    }
