"""Built-in task: single-label text classification, with an optional text pair.

Rows are `{"text": ..., "text_pair": ... (optional), "label": ...}`. Everything but the
row schema is the kit's `TextClassifier`. Registered through `edgetune_register_tasks`
exactly like a third-party plugin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from edgetune.kit import TextClassifier, optional_text_field, single_label, text_field
from edgetune.plugins import hookimpl
from edgetune.task import Input, Task, Text, TextPair, TokenIds


class TextClassification(TextClassifier):
    """Single-label classification of a text or a text pair."""

    name = "text-classification"
    description = "Single-label classification of a text or a text pair (softmax over labels)."
    input_kinds = (Text, TextPair, TokenIds)

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`text` (and optional `text_pair`) must be non-empty strings; `label` one value."""
        text_field(example, "text", row)
        optional_text_field(example, "text_pair", row)
        return [single_label(example, row)]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """A Text, or a TextPair when the example has a second text."""
        if example.get("text_pair"):
            return TextPair(str(example["text"]), str(example["text_pair"]))
        return Text(str(example["text"]))


@hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the text-classification task."""
    register(TextClassification())
