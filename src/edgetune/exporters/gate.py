"""The int8 gate: quantize an fp32 export and keep an int8 model only if it costs at most
a budget of the task's gate metric on the validation rows."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from edgetune.errors import FailedPrecondition
from edgetune.exporters.evaluate import evaluate
from edgetune.exporters.optimize import can_fuse, fuse_and_quantize
from edgetune.exporters.quantize import quantize_dynamic
from edgetune.store import Manifest
from edgetune.store.manifest import MODEL_FILE
from edgetune.task import Task

FP32_FILE = "model.fp32.onnx"
INT8_FILE = "model.int8.onnx"
FUSED_FILE = "model.int8-fused.onnx"


def choose_int8(
    task: Task,
    folder: Path,
    manifest: Manifest,
    fp32: dict[str, float],
    val_rows: Sequence[Mapping[str, Any]],
    val_label_ids: Sequence[Any],
    *,
    budget: float,
    on_failure: str,
) -> tuple[str | None, dict[str, float], str]:
    """Quantize the fp32 export two ways (fused graph first, it is faster; plain second)
    and keep the first whose gate metric is within the budget of fp32's.

    :return: (file to publish or None for fp32, its metrics, what the gate decided).
    :param budget: the largest drop of the task's gate metric accepted (0.01 = one point).
    :param on_failure: "fail" raises when no int8 model passes; else fp32 is published.
    :raises FailedPrecondition: no int8 model passes and on_failure is "fail".
    """
    metric = task.gate_metric
    candidates: list[tuple[str, str, Callable[[Path, str, str], str]]] = []
    if can_fuse(folder):
        candidates.append(("fused int8", FUSED_FILE, fuse_and_quantize))
    candidates.append(("int8", INT8_FILE, quantize_dynamic))
    verdicts: list[str] = []
    tried: dict[str, float] = {}
    for label, name, make in candidates:
        try:
            cpu = make(folder, MODEL_FILE, name)
        except FailedPrecondition as exc:
            return None, {}, f"not quantized: {exc.message}; published fp32"
        metrics = evaluate(task, folder, name, manifest, val_rows, val_label_ids)
        drop = fp32[metric] - metrics[metric]
        verdicts.append(f"{label} {metric} {metrics[metric]:.4f} (drop {drop * 100:.2f} points)")
        tried = tried or metrics
        if drop <= budget:
            summary = "; ".join(verdicts)
            return (
                name,
                metrics,
                (
                    f"fp32 {metric} {fp32[metric]:.4f}; {summary}; budget "
                    f"{budget * 100:.2f} points: published {label} ({cpu})"
                ),
            )
    summary = "; ".join(verdicts)
    if on_failure == "fail":
        raise FailedPrecondition(
            f"accuracy gate: fp32 {metric} {fp32[metric]:.4f}; {summary}; "
            f"over the budget of {budget * 100:.2f} points"
        )
    return (
        None,
        tried,
        (
            f"fp32 {metric} {fp32[metric]:.4f}; {summary}: over the budget of "
            f"{budget * 100:.2f} points, published fp32"
        ),
    )
