"""Property-based fuzzing of the data path without a server: the built-in data-set readers
(JSONL, CSV) get arbitrary files, every built-in task's `example_labels` gets arbitrary
JSON-like rows, and the training-data checks get arbitrary sets of rows.

Only `edgetune.errors.InvalidArgument` may escape (anything else becomes INTERNAL at the
server or kills a job), and what is accepted is usable: a reader's rows hold only valid
Unicode, an accepted row's labels are non-empty strings and its serving input is of a kind
the task takes. Each bug these tests found is pinned as an `@example`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fuzzing import (
    FUZZ,
    IMAGE_B64,
    SPECIAL_FILES,
    TASKS,
    csv_bytes,
    good_rows,
    json_values,
    jsonl,
    wild_files,
    wild_rows,
)
from hypothesis import event, example, given
from hypothesis import strategies as st

from edgetune.errors import InvalidArgument
from edgetune.plugins.manager import Plugins
from edgetune.plugins.readers import json_strings
from edgetune.task import Task
from edgetune.training.datasets import check_training_data, stratified_split


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One file the examples overwrite in turn."""
    return tmp_path_factory.mktemp("fuzz-rows") / "data"


@st.composite
def files(draw: st.DrawFn) -> bytes:
    """Wild bytes, or a task's valid rows as JSONL or CSV with one line made wild."""
    if draw(st.booleans()):
        return draw(wild_files)
    rows = draw(st.lists(good_rows(draw(st.sampled_from(TASKS))), min_size=1, max_size=6))
    body = draw(st.sampled_from([jsonl(rows), jsonl(rows, ascii_only=True), csv_bytes(rows)]))
    lines = body.splitlines(keepends=True)
    if draw(st.booleans()):
        lines[draw(st.integers(0, len(lines) - 1))] = draw(st.binary(max_size=30)) + b"\n"
    return b"".join(lines)


@FUZZ
@given(data=files())
# Regressions: RecursionError, ValueError (int digits) and csv.Error escaped the readers,
# and lone surrogates got through to the answer and the tokenizers.
@example(data=SPECIAL_FILES["deep"])
@example(data=SPECIAL_FILES["long int"])
@example(data=SPECIAL_FILES["surrogate text"])
@example(data=SPECIAL_FILES["surrogate key"])
@example(data=SPECIAL_FILES["csv field"])
@example(data=SPECIAL_FILES["csv header field"])
def test_readers_raise_only_invalid_argument_and_return_valid_unicode(
    plugins: Plugins, scratch: Path, data: bytes
) -> None:
    scratch.write_bytes(data)
    for reader in plugins.readers.values():
        try:
            rows = list(reader.read(scratch))
        except InvalidArgument:
            event(f"{reader.format} refused")
            continue
        event(f"{reader.format} read {'no' if not rows else 'some'} rows")
        for row in rows:
            assert isinstance(row, dict)
            for text in json_strings(row):
                text.encode("utf-8")  # UnicodeEncodeError for a lone surrogate


def test_an_escaped_surrogate_pair_is_a_character(plugins: Plugins, scratch: Path) -> None:
    """The surrogate check refuses lone halves only: a pair is how JSON escapes an emoji."""
    scratch.write_bytes(SPECIAL_FILES["escaped pair"])
    assert list(plugins.reader("jsonl").read(scratch)) == [{"text": "a \U0001f600", "label": "b"}]


@st.composite
def rows_for(draw: st.DrawFn, task: str) -> dict[str, Any]:
    """A row of any shape, or one the task accepts with one field replaced or removed."""
    if draw(st.booleans()):
        return draw(wild_rows)
    row = draw(good_rows(task))
    name = draw(st.sampled_from(sorted(row)))
    match draw(st.sampled_from(["none", "replace", "remove"])):
        case "replace":
            row[name] = draw(json_values)
        case "remove":
            del row[name]
    return row


def check_row(task: Task, row: dict[str, Any]) -> list[str] | None:
    """The row's labels, or None when the task refuses it with InvalidArgument."""
    try:
        labels = task.example_labels(row, 1)
    except InvalidArgument as exc:
        refusal = exc
    else:
        assert labels and all(isinstance(label, str) and label for label in labels)
        assert isinstance(task.example_input(row), task.input_kinds)
        event(f"{task.name} accepted")
        return labels
    assert refusal.message.startswith("row 1: "), refusal.message  # it names the row
    event(f"{task.name} refused: {refusal.message[7:35]}")
    return None


@FUZZ
@given(case=st.sampled_from(TASKS).flatmap(lambda name: st.tuples(st.just(name), rows_for(name))))
def test_example_labels_raise_only_invalid_argument(
    plugins: Plugins, case: tuple[str, dict[str, Any]]
) -> None:
    name, row = case
    check_row(plugins.task(name), row)


def nested(depth: int) -> list[Any]:
    """A list in a list ... depth times."""
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("name", "field", "row", "message"),
    [
        ("text-classification", "label", {"text": "a"}, "field 'label' must be one value"),
        ("image-classification", "label", {"image": IMAGE_B64}, "field 'label' must be one value"),
        (
            "multi-label-classification",
            "labels",
            {"text": "a"},
            "label 1 must be a string, not list",
        ),
    ],
)
def test_a_label_nested_past_the_recursion_limit_is_refused(
    plugins: Plugins, name: str, field: str, row: dict[str, Any], message: str
) -> None:
    """Regression (a plain test: hypothesis cannot print such an example): str() or repr()
    of the label raised RecursionError. A reader plugin may return such a value, and JSONL
    rows as deep as the parser allows came within a few stack frames of it."""
    deep = nested(5000)
    with pytest.raises(InvalidArgument, match=message):
        plugins.task(name).example_labels({**row, field: [deep] if field == "labels" else deep}, 1)


@st.composite
def mostly_good_rows(draw: st.DrawFn, task: str, max_size: int) -> list[dict[str, Any]]:
    """Rows the task accepts, sometimes with one of any shape among them."""
    rows = draw(st.lists(good_rows(task), max_size=max_size))
    if rows and draw(st.booleans()):
        rows[draw(st.integers(0, len(rows) - 1))] = draw(rows_for(task))
    return rows


@FUZZ
@given(data=st.data(), name=st.sampled_from(TASKS), fraction=st.floats(0, 1), seed=st.integers())
def test_training_data_checks_raise_only_invalid_argument(
    plugins: Plugins, data: st.DataObject, name: str, fraction: float, seed: int
) -> None:
    """check_training_data and stratified_split on any rows: a label set of two or more, a
    split of every row, or InvalidArgument."""
    task = plugins.task(name)
    train = data.draw(mostly_good_rows(name, max_size=10))
    validation = data.draw(st.none() | mostly_good_rows(name, max_size=4))
    try:
        labels = check_training_data(task, train, validation)
    except InvalidArgument:
        event("training data refused")
        return
    assert len(labels) >= 2 and labels == sorted(set(labels))
    try:
        fit, held_out = stratified_split(task, train, fraction, seed)
    except InvalidArgument:
        event("split refused")
        return
    event("split")
    assert held_out and sorted(map(repr, fit + held_out)) == sorted(map(repr, train))
