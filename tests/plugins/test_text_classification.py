"""The built-in text-classification task, through its Task interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgetune.errors import InvalidArgument
from edgetune.plugins.text_classification import TextClassification
from edgetune.task import Text, TextPair

task = TextClassification()


def test_example_labels_checks_the_row() -> None:
    assert task.example_labels({"text": "a", "label": "pos"}, 1) == ["pos"]
    assert task.example_labels({"text": "a", "text_pair": "b", "label": 3}, 1) == ["3"]
    with pytest.raises(InvalidArgument, match="row 2: field 'label' is missing"):
        task.example_labels({"text": "b"}, 2)
    with pytest.raises(InvalidArgument, match="row 4: field 'label' must be one value"):
        task.example_labels({"text": "b", "label": ["x", "y"]}, 4)


def test_example_input_mirrors_the_serving_kinds() -> None:
    assert task.example_input({"text": "a", "label": "x"}) == Text("a")
    assert task.example_input({"text": "a", "text_pair": "b"}) == TextPair("a", "b")


def test_build_model_and_features(tiny_bert: Path) -> None:
    tokenizer = task.load_preprocessor(tiny_bert)
    model = task.build_model(tiny_bert, ["bad", "good"])
    assert model.config.id2label == {0: "bad", 1: "good"}
    assert model.classifier.out_features == 2
    features = task.build_features(
        [{"text": "good fun", "label": "good"}, {"text": "bad plot", "label": "bad"}],
        tokenizer,
        ["bad", "good"],
        max_length=16,
    )
    assert [f["labels"] for f in features] == [1, 0]
    assert len(features) == 2 and features[0]["input_ids"][0] == tokenizer.cls_token_id
    pairs = task.build_features(
        [{"text": "good", "text_pair": "fun", "label": "good"}], tokenizer, ["bad", "good"], 16
    )
    assert 1 in pairs[0]["token_type_ids"]  # the second segment is marked
    # Imported as it is: the first max_length tokens; trained here: long texts in windows.
    options = task.task_options(model, tokenizer)
    assert options == {"max_length": 64, "pad_token": "[PAD]", "pad_token_id": 0}
    cut = task.task_options(model, tokenizer, max_length=16)
    assert cut["max_length"] == 16 and "windows" not in cut
    assert task.trained_options(cut) == cut  # the first window only, unless a task asks

    class Windowed(TextClassification):
        read_windows = 4

    assert Windowed().trained_options(cut) == {**cut, "windows": 4}


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"label": "good"}], "row 1: field 'text' is missing"),
        (
            [{"text": "ok", "label": "good"}, {"text": "  ", "label": "good"}],
            "row 2: field 'text' is empty",
        ),
        ([{"text": 5, "label": "good"}], "row 1: field 'text' must be a string"),
        ([{"text": "ok", "label": "meh"}], "row 1: label 'meh' is not one of the training labels"),
        ([{"text": "ok"}], "row 1: field 'label' is missing"),
        (
            [{"text": "a", "text_pair": "b", "label": "good"}, {"text": "c", "label": "good"}],
            "field 'text_pair' must be on every row or on none",
        ),
    ],
)
def test_bad_rows_are_named(tiny_bert: Path, rows: list[dict[str, object]], message: str) -> None:
    tokenizer = task.load_preprocessor(tiny_bert)
    with pytest.raises(InvalidArgument) as caught:
        task.build_features(rows, tokenizer, ["bad", "good"], 16)
    assert caught.value.message == message


def test_compute_metrics_takes_logits_and_handles_absent_labels() -> None:
    logits = np.array([[2.0, 0.1, 0.0], [0.0, 3.0, 0.0]])
    metrics = task.compute_metrics(logits, np.array([0, 1]), ["a", "b", "c"])
    assert metrics["accuracy"] == 1.0
    assert metrics["f1/c"] == 0.0  # never predicted, never present: 0, not NaN
