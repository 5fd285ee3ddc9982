"""Intent detection as an edgetune task: rows are {"utterance": ..., "intent": ...}.

A third-party plugin in its own distribution. It reuses the built-in text classifier for the
model, export and serving (its features come through `example_labels` and `example_input`),
and brings its own data-set schema and checks: utterances are
short (at most MAX_WORDS words) and intents are snake_case identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import edgetune
from edgetune.errors import InvalidArgument
from edgetune.plugins.text_classification import TextClassification
from edgetune.task import Input, Text

MAX_WORDS = 64
INTENT = re.compile(r"^[a-z][a-z0-9_]*$")


class IntentDetection(TextClassification):
    """Which intent a chat utterance expresses."""

    name = "intent-detection"
    description = "Intent of a short chat utterance (rows: utterance, intent)."
    input_kinds = (Text,)

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`utterance`: a non-empty string of at most MAX_WORDS words; `intent`: snake_case."""
        utterance = example.get("utterance")
        if not isinstance(utterance, str) or not utterance.strip():
            raise InvalidArgument(f"row {row}: field 'utterance' must be a non-empty string")
        if len(utterance.split()) > MAX_WORDS:
            raise InvalidArgument(
                f"row {row}: field 'utterance' has more than {MAX_WORDS} words; "
                "intents are detected in short utterances"
            )
        intent = example.get("intent")
        if not isinstance(intent, str) or not INTENT.fullmatch(intent):
            raise InvalidArgument(
                f"row {row}: field 'intent' must be a snake_case name such as 'book_flight', "
                f"not {intent!r}"
            )
        return [intent]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        return Text(str(example["utterance"]))


@edgetune.hookimpl
def edgetune_register_tasks(register: Any) -> None:
    register(IntentDetection())
