"""Checks of raw data-set rows (plain Python: they run in the server at upload and job
creation), each error naming the row and the field as the Task contract asks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from edgetune.errors import InvalidArgument


def text_field(example: Mapping[str, Any], name: str, row: int) -> str:
    """The non-empty string in field `name` of a row.

    :raises InvalidArgument: "row N: field 'name' is missing / must be a string / is empty".
    """
    value = example.get(name)
    if value is None:
        raise InvalidArgument(f"row {row}: field {name!r} is missing")
    if not isinstance(value, str):
        raise InvalidArgument(f"row {row}: field {name!r} must be a string")
    if not value.strip():
        raise InvalidArgument(f"row {row}: field {name!r} is empty")
    return value


def optional_text_field(example: Mapping[str, Any], name: str, row: int) -> str | None:
    """The string in field `name`, or None when the row leaves it out or empty ("" is how a
    CSV file leaves a column out); given, it is checked as `text_field` checks."""
    if example.get(name) in (None, ""):
        return None
    return text_field(example, name, row)


def single_label(example: Mapping[str, Any], row: int, name: str = "label") -> str:
    """The one label of a single-label row, as a string (CSV and JSON numbers alike).

    :raises InvalidArgument: the field is missing, blank, or a list or object.
    """
    label = example.get(name)
    # Before str(): a list may nest deeper than str() can recurse.
    if isinstance(label, list | dict):
        raise InvalidArgument(f"row {row}: field {name!r} must be one value, not a list")
    if label is None or str(label).strip() == "":
        raise InvalidArgument(f"row {row}: field {name!r} is missing")
    return str(label)


def string_list(example: Mapping[str, Any], name: str, row: int) -> list[str]:
    """The non-empty list of non-empty strings in field `name` (words, tags ...).

    :raises InvalidArgument: naming the field, or the item (`name[i]`) that is wrong.
    """
    value = example.get(name)
    if value is None:
        raise InvalidArgument(f"row {row}: field {name!r} is missing")
    if not isinstance(value, list):
        raise InvalidArgument(f"row {row}: field {name!r} must be a list of strings")
    if not value:
        raise InvalidArgument(f"row {row}: field {name!r} is empty")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgument(f"row {row}: field '{name}[{i}]' must be a string")
        if not item.strip():
            raise InvalidArgument(f"row {row}: field '{name}[{i}]' is empty")
    return value


class LabelIds:
    """A job's label set as ids (its order is the model's output order), refusing a label
    the training rows did not have, naming the row: `build_features` of every task needs it.
    """

    def __init__(self, labels: Sequence[str], what: str = "label") -> None:
        """:param what: how errors name a label ("label", "tag" ...)."""
        self.labels = list(labels)
        self.what = what
        self._ids = {label: i for i, label in enumerate(self.labels)}

    def __len__(self) -> int:
        """How many labels there are."""
        return len(self.labels)

    def get(self, label: str, default: int) -> int:
        """The id of label, or default for a label outside the set."""
        return self._ids.get(label, default)

    def __call__(self, label: str, row: int) -> int:
        """The id of label.

        :raises InvalidArgument: "row N: label 'x' is not one of the training labels".
        """
        try:
            return self._ids[label]
        except KeyError:
            raise InvalidArgument(
                f"row {row}: {self.what} {label!r} is not one of the training labels"
            ) from None

    def multi_hot(self, labels: Iterable[str], row: int) -> list[float]:
        """A float 0/1 target over the label set with a 1 for each of labels."""
        target = [0.0] * len(self.labels)
        for label in labels:
            target[self(label, row)] = 1.0
        return target
