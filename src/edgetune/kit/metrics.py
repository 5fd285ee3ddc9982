"""Classification metrics in numpy for task plugins (no scikit-learn, so they also run where
only serving is installed, e.g. evaluating an exported model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt


def confusion_matrix(
    predicted: npt.ArrayLike, actual: npt.ArrayLike, num_labels: int
) -> npt.NDArray[np.int64]:
    """matrix[actual, predicted] counts."""
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual), np.asarray(predicted)), 1)
    return matrix


def classification_metrics(
    predicted: npt.NDArray[Any], actual: npt.NDArray[Any], labels: Sequence[str]
) -> dict[str, float]:
    """Accuracy, macro-averaged precision, recall and F1, F1 per label ("f1/<label>") and
    the confusion matrix ("confusion/<actual>/<predicted>": count).

    A label never predicted has precision 0; one never present has recall 0 (as scikit-learn
    with zero_division=0).
    """
    matrix = confusion_matrix(predicted, actual, len(labels))
    true_pos = np.diag(matrix).astype(np.float64)
    predicted_count = matrix.sum(axis=0)
    actual_count = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, true_pos / predicted_count, 0.0)
        recall = np.where(actual_count > 0, true_pos / actual_count, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    total = matrix.sum()
    metrics = {
        "accuracy": float(true_pos.sum() / total) if total else 0.0,
        "precision": float(precision.mean()),
        "recall": float(recall.mean()),
        "f1": float(f1.mean()),
    }
    metrics.update({f"f1/{label}": float(f1[i]) for i, label in enumerate(labels)})
    metrics.update(
        {
            f"confusion/{actual_label}/{predicted_label}": float(matrix[i, j])
            for i, actual_label in enumerate(labels)
            for j, predicted_label in enumerate(labels)
        }
    )
    return metrics
