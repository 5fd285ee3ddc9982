"""Intent detection as an edgetune task: rows are {"utterance": ..., "intent": ...}.

A third-party plugin in its own distribution, built on edgetune's task kit: the kit's
`TextClassifier` brings the model, tokenization, training, metrics, baseline, export and
serving (its features come through `example_labels` and `example_input`); this plugin brings
its data-set schema and checks: utterances are short (at most MAX_WORDS words) and intents
are snake_case identifiers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import edgetune
from edgetune.errors import InvalidArgument
from edgetune.kit import TextClassifier, text_field
from edgetune.task import Input, Task, Text

MAX_WORDS = 64
INTENT = re.compile(r"^[a-z][a-z0-9_]*$")


class IntentDetection(TextClassifier):
    """Which intent a chat utterance expresses."""

    name = "intent-detection"
    description = "Intent of a short chat utterance (rows: utterance, intent)."
    input_kinds = (Text,)

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`utterance`: a non-empty string of at most MAX_WORDS words; `intent`: snake_case."""
        utterance = text_field(example, "utterance", row)
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
        """The utterance, as a client sends it."""
        return Text(str(example["utterance"]))


@edgetune.hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the intent-detection task."""
    register(IntentDetection())
