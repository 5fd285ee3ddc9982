"""Text similarity as an edgetune task: how alike two texts are, a number from 0 to 1.

Rows are {"text": ..., "text_pair": ..., "score": 0.0-1.0}. One model output, trained on the
score with squared error (transformers' problem_type "regression"); a result is one label,
the band (`BANDS`) of the predicted score, with the score clipped to 0..1. The bands are the
task's labels in the Task contract (the core stratifies the validation split on them).
Metrics: R² (selection and int8 gate; 0 for a constant guess, where Pearson's r is noise),
Pearson's r, Spearman's rho, the mean squared error."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

import edgetune
from edgetune.errors import InvalidArgument
from edgetune.kit import LabelIds, TextTask, TokenizerRuntime, text_field
from edgetune.task import Array, Encoded, Input, LabelScore, Result, Task, TextPair

BANDS = ((1 / 3, "low"), (2 / 3, "mid"), (float("inf"), "high"))


def band(score: float) -> str:
    """The name of the band a score falls in: the first whose upper bound it is under."""
    return next(name for upper, name in BANDS if score < upper)


def scores(logits: Array) -> Array:
    """The predicted scores of a (pairs, 1) output, clipped to the range of the targets."""
    return np.clip(np.asarray(logits, dtype=np.float64)[:, 0], 0.0, 1.0)


def correlation(a: Array, b: Array) -> float:
    """Pearson's r; 0 where a side is constant (r is undefined; checkpoints need a number)."""
    return 0.0 if a.std() == 0 or b.std() == 0 else float(np.corrcoef(a, b)[0, 1])


def ranks(values: Array) -> Array:
    """Ranks from 1, ties sharing their mean rank (as Spearman's rho takes them)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    return (np.cumsum(counts) - (counts - 1) / 2)[inverse]


class SimilarityRuntime(TokenizerRuntime):
    """The kit's tokenization of the pairs; the score and its band on the way out."""

    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """One selected label per pair: the band of its score, with the score."""
        return [Result([LabelScore(band(s), float(s), True)]) for s in scores(outputs[0])]


class TextSimilarity(TextTask):
    """How alike two texts are, from 0 (unrelated) to 1 (the same meaning)."""

    name = "text-similarity"
    description = "How alike two texts are: a score from 0 to 1 (rows: text, text_pair, score)."
    input_kinds = (TextPair,)
    problem_type = "regression"
    outputs = ("score",)
    runtime_class = SimilarityRuntime
    selection_metric = gate_metric = "r2"
    search_metrics = ("r2", "pearson", "spearman")

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`text` and `text_pair`: non-empty strings; `score`: a number from 0 to 1."""
        text_field(example, "text", row)
        text_field(example, "text_pair", row)
        return [band(self.example_target(example, row, LabelIds(())))]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """The two texts."""
        return TextPair(str(example["text"]), str(example["text_pair"]))

    def example_target(self, example: Mapping[str, Any], row: int, ids: LabelIds) -> float:
        """The row's score, checked; a float, as the squared error needs."""
        value = example.get("score")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise InvalidArgument(f"row {row}: field 'score' must be a number from 0 to 1")
        return float(value)

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """R², Pearson and Spearman (higher is better) and the mean squared error."""
        predicted, actual = scores(logits), np.asarray(label_ids, dtype=np.float64)
        mse = float(np.mean((predicted - actual) ** 2))
        return {
            "r2": 1 - mse / actual.var() if actual.var() else 0.0,
            "pearson": correlation(predicted, actual),
            "spearman": correlation(ranks(predicted), ranks(actual)),
            "mse": mse,
        }


@edgetune.hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the text-similarity task."""
    register(TextSimilarity())
