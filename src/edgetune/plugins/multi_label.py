"""Built-in task: multi-label text classification (any number of labels per text).

Each label gets its own sigmoid score, and a label is predicted ("selected") when its score
is at or over its threshold. The thresholds live in the manifest's
`task_options["thresholds"]` (label -> threshold): each label's F1-best threshold on the
validation data of the job that made the version (`calibrate`), 0.5 for an imported model.

Rows name their labels in `labels`: a JSON list of strings, or one string with the labels
separated by "," (for CSV files). A row without `labels` may use `label` under the same
rules, so inline examples (whose proto carries one `label` string) work too.

Metrics: "f1", "precision" and "recall" are micro-averaged over every (text, label)
decision, and "f1" picks the best checkpoint and gates int8; "macro_*" average the labels
equally; "accuracy" is the exact-match ratio (every label of a text right). Each label's
"threshold/<label>" is the one that maximizes its F1 on the evaluated examples, reported
with the micro F1 it reaches ("f1_tuned", optimistic: tuned and measured on the same rows);
the other metrics, the gate included, are measured at 0.5.

Tokenization, training and serving options are the kit's `TextTask`. Registered through
`edgetune_register_tasks` exactly like a third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.kit import (
    TFIDF_DESCRIPTION,
    LabelIds,
    TextTask,
    TokenizerRuntime,
    input_texts,
    text_field,
    tfidf_logistic_regression,
)
from edgetune.plugins import hookimpl
from edgetune.task import (
    Array,
    Baseline,
    Encoded,
    Input,
    LabelScore,
    ModelFiles,
    Preprocessor,
    Result,
    Task,
    Text,
    TokenIds,
    TrainableModel,
)

DEFAULT_THRESHOLD = 0.5
SEPARATOR = ","
"""Separates labels given as one string."""
PROBLEM_TYPE = "multi_label_classification"
"""transformers' config.problem_type that trains with BCE-with-logits on multi-hot targets."""


# ---- metrics -----------------------------------------------------------------------------


def sigmoid(logits: Array) -> npt.NDArray[np.float32]:
    """Element-wise logistic function in float32, without overflow for large logits."""
    x = np.asarray(logits, dtype=np.float32)
    result: npt.NDArray[np.float32] = 0.5 * (1.0 + np.tanh(0.5 * x))
    return result


def _ratio(numerator: Array, denominator: Array) -> npt.NDArray[np.float64]:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    num = np.asarray(numerator, dtype=np.float64)
    den = np.asarray(denominator, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def multi_label_metrics(
    predicted: npt.NDArray[np.bool_], actual: npt.NDArray[np.bool_], labels: Sequence[str]
) -> dict[str, float]:
    """Metrics of multi-hot predictions against multi-hot targets, both (examples, labels).

    "precision", "recall" and "f1" are micro-averaged (every text-label decision counts
    once); "macro_precision", "macro_recall" and "macro_f1" average the labels equally;
    "accuracy" is the exact-match ratio; "hamming_loss" the share of wrong decisions;
    "f1/<label>" each label's F1. A label never predicted has precision 0, one never
    present recall 0 (as scikit-learn with zero_division=0).
    """
    true_pos = (predicted & actual).sum(axis=0)
    predicted_count = predicted.sum(axis=0)
    actual_count = actual.sum(axis=0)
    precision = _ratio(true_pos, predicted_count)
    recall = _ratio(true_pos, actual_count)
    f1 = _ratio(2 * true_pos, predicted_count + actual_count)
    micro_precision = _ratio(true_pos.sum(), predicted_count.sum())
    micro_recall = _ratio(true_pos.sum(), actual_count.sum())
    micro_f1 = _ratio(2 * true_pos.sum(), predicted_count.sum() + actual_count.sum())
    metrics = {
        "accuracy": float(np.all(predicted == actual, axis=1).mean()),
        "precision": float(micro_precision),
        "recall": float(micro_recall),
        "f1": float(micro_f1),
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "macro_f1": float(f1.mean()),
        "hamming_loss": float((predicted != actual).mean()),
    }
    metrics.update({f"f1/{label}": float(f1[i]) for i, label in enumerate(labels)})
    return metrics


def tune_thresholds(
    scores: npt.NDArray[np.floating[Any]], actual: npt.NDArray[np.bool_]
) -> npt.NDArray[np.float64]:
    """Per label, the threshold that maximizes its F1 on these examples: halfway between
    the lowest score it selects and the next lower one, the nearest to 0.5 among equals.
    A label with no positive example keeps 0.5."""
    thresholds = np.full(scores.shape[1], DEFAULT_THRESHOLD)
    for j in range(scores.shape[1]):
        positives = int(actual[:, j].sum())
        if positives == 0:
            continue
        order = np.argsort(-scores[:, j], kind="stable")
        ranked = scores[order, j].astype(np.float64)
        true_pos = np.cumsum(actual[order, j])
        # Cut after position k (select the k + 1 best) only where the next score is lower.
        cuts = np.flatnonzero(np.append(ranked[1:] < ranked[:-1], True))
        f1 = 2 * true_pos[cuts] / (cuts + 1 + positives)
        below = np.append(ranked[1:], 0.0)[cuts]
        candidates = (ranked[cuts] + below) / 2
        best = np.flatnonzero(f1 == f1.max())
        thresholds[j] = candidates[best[np.argmin(np.abs(candidates[best] - DEFAULT_THRESHOLD))]]
    return thresholds


# ---- serving -----------------------------------------------------------------------------


class MultiLabelRuntime(TokenizerRuntime):
    """The kit's batch tokenization; a sigmoid and a threshold per label on the way out."""

    def __init__(self, model: ModelFiles) -> None:
        super().__init__(model)
        self.thresholds = read_thresholds(model.manifest.task_options, self.labels, model.path)

    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """Every label ranked by its sigmoid score (the top_k best when top_k > 0); each
        label at or over its threshold is `selected`, however many that is."""
        scores = sigmoid(outputs[0])
        selected = scores >= self.thresholds
        k = top_k or scores.shape[1]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        labels = self.labels
        return [
            Result(labels=[LabelScore(labels[j], float(row[j]), bool(chosen[j])) for j in best])
            for row, chosen, best in zip(scores, selected, order, strict=True)
        ]


def read_thresholds(
    options: Mapping[str, Any], labels: Sequence[str], folder: Path
) -> npt.NDArray[np.float32]:
    """The manifest's per-label thresholds in label order; 0.5 for a label it does not name.

    :raises ModelLoadError: `thresholds` is not a mapping, or a value is not in [0, 1].
    """
    given = options.get("thresholds", {})
    if not isinstance(given, Mapping):
        raise ModelLoadError(f"{folder}: task option 'thresholds' must map labels to numbers")
    values = []
    for label in labels:
        value = given.get(label, DEFAULT_THRESHOLD)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ModelLoadError(
                f"{folder}: task option thresholds[{label!r}] = {value!r} is not a number "
                "from 0 to 1"
            )
        values.append(float(value))
    return np.array(values, dtype=np.float32)


# ---- the task ----------------------------------------------------------------------------


class MultiLabelClassification(TextTask):
    """Multi-label classification of a text: each label is predicted on its own."""

    name = "multi-label-classification"
    description = (
        "Multi-label classification of a text: any number of labels, each with a sigmoid "
        "score and a threshold."
    )
    input_kinds = (Text, TokenIds)
    runtime_class = MultiLabelRuntime
    problem_type = PROBLEM_TYPE
    """BCE-with-logits on multi-hot targets: transformers picks the loss from
    config.problem_type at each forward, and config.json keeps it in the export."""
    selection_metric = "f1"
    """Micro F1: steadier than macro F1 on the small validation sets of rare labels."""
    gate_metric = "f1"
    """Micro F1: exact-match accuracy jumps on any one flipped label of a text."""

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`text` must be a non-empty string and `labels` (or `label`) a non-empty list of
        distinct non-empty strings, or one string of them separated by ",".

        :return: the row's labels sorted, so that rows with the same label set group
            together when the validation split is stratified.
        """
        text_field(example, "text", row)
        return _row_labels(example, row)

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """The example's text."""
        return Text(str(example["text"]))

    def example_target(self, example: Mapping[str, Any], row: int, ids: LabelIds) -> list[float]:
        """Float multi-hot "labels" in label order (BCE-with-logits takes float targets)."""
        return ids.multi_hot(self.example_labels(example, row), row)

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Metrics at the default threshold (see `multi_label_metrics`), plus each label's
        tuned "threshold/<label>" and the micro "f1_tuned" they reach on these examples."""
        scores = sigmoid(logits)
        actual = np.asarray(label_ids) >= 0.5
        metrics = multi_label_metrics(scores >= DEFAULT_THRESHOLD, actual, labels)
        tuned = tune_thresholds(scores, actual)
        metrics["f1_tuned"] = multi_label_metrics(scores >= tuned, actual, labels)["f1"]
        metrics.update({f"threshold/{label}": float(tuned[i]) for i, label in enumerate(labels)})
        return metrics

    def task_options(
        self, model: TrainableModel, preprocessor: Preprocessor, max_length: int | None = None
    ) -> dict[str, Any]:
        """The kit's tokenizer options plus `thresholds`: 0.5 for every label until
        `calibrate` tunes them."""
        options = super().task_options(model, preprocessor, max_length)
        id2label = model.config.id2label
        options["thresholds"] = {str(id2label[i]): DEFAULT_THRESHOLD for i in sorted(id2label)}
        return options

    def calibrate(self, options: dict[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
        """Serve with each label's threshold tuned on the validation data (its F1 best)."""
        thresholds = dict(options.get("thresholds", {}))
        for label in thresholds:
            thresholds[label] = float(metrics.get(f"threshold/{label}", thresholds[label]))
        return {**options, "thresholds": thresholds}

    def baseline(
        self,
        train: Sequence[Mapping[str, Any]],
        validation: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
    ) -> Baseline:
        """TF-IDF + one logistic regression per label, metrics at its 0.5 threshold."""

        def targets(rows: Sequence[Mapping[str, Any]]) -> npt.NDArray[np.bool_]:
            return np.array(self.targets(rows, labels)) >= 0.5

        predicted = tfidf_logistic_regression(
            input_texts([self.example_input(row) for row in train]),
            targets(train).astype(np.int64),
            input_texts([self.example_input(row) for row in validation]),
        )
        description = TFIDF_DESCRIPTION.replace(
            "logistic regression", "a logistic regression per label"
        )
        return Baseline(
            description, multi_label_metrics(predicted.astype(bool), targets(validation), labels)
        )


def _row_labels(example: Mapping[str, Any], row: int) -> list[str]:
    """The labels of a row, checked; see `MultiLabelClassification.example_labels`."""
    name = "label" if "labels" not in example and "label" in example else "labels"
    value = example.get(name)
    field = f"row {row}: field {name!r}"
    if value is None:
        raise InvalidArgument(f"{field} is missing")
    if isinstance(value, str):
        if not value.strip():
            raise InvalidArgument(f"{field} is empty")
        parts: list[Any] = value.split(SEPARATOR)
    elif isinstance(value, list):
        if not value:
            raise InvalidArgument(f"{field} is an empty list: give at least one label")
        parts = value
    else:
        raise InvalidArgument(
            f"{field} must be a list of strings or one string of labels separated by "
            f"{SEPARATOR!r}, not {type(value).__name__}"
        )
    labels: list[str] = []
    for i, part in enumerate(parts):
        if not isinstance(part, str):
            # The type, not the value: a list may be huge, or nest deeper than repr() goes.
            raise InvalidArgument(
                f"{field}: label {i + 1} must be a string, not {type(part).__name__}"
            )
        label = part.strip()
        if not label:
            raise InvalidArgument(f"{field}: label {i + 1} is empty")
        if label in labels:
            raise InvalidArgument(f"{field} names label {label!r} twice")
        labels.append(label)
    return sorted(labels)


@hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the multi-label-classification task."""
    register(MultiLabelClassification())
