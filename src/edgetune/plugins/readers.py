"""Built-in data-set readers: JSONL and CSV, registered like third-party readers."""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgetune.data import DatasetReader
from edgetune.errors import InvalidArgument
from edgetune.plugins import hookimpl

_SURROGATE = re.compile("[\ud800-\udfff]")
"""A code point that only exists inside UTF-16 pairs: JSON's `\\ud800` escape can name
one alone, and no UTF-8 file, protobuf string or tokenizer can hold it."""


def _decode(raw: bytes, row: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgument(
            f"row {row}: not valid UTF-8 (byte {exc.start} of the line); save the file as UTF-8"
        ) from None


class JsonlReader(DatasetReader):
    """One JSON object per line, e.g. {"text": "...", "label": "..."}; blank lines skipped."""

    format = "jsonl"
    suffixes = (".jsonl", ".ndjson", ".json")

    def read(self, path: Path) -> Iterator[dict[str, Any]]:
        """Rows are numbered by line."""
        with path.open("rb") as f:
            for row, raw in enumerate(f, start=1):
                line = _decode(raw, row).strip()
                if not line:
                    continue
                value = _parse_json(line, row)
                if not isinstance(value, dict):
                    raise InvalidArgument(f"row {row}: expected a JSON object")
                # Only a \u escape can make a surrogate, and most lines hold none.
                if "\\u" in line and _holds_surrogate(value):
                    raise InvalidArgument(
                        f"row {row}: a \\u escape names a lone surrogate (\\ud800-\\udfff), "
                        "which is not a character"
                    )
                yield value


def _parse_json(line: str, row: int) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"row {row}: not valid JSON: {exc.msg}") from None
    except ValueError:  # the only other one json raises: an integer past int()'s limit
        raise InvalidArgument(
            f"row {row}: a number has more than {sys.get_int_max_str_digits()} digits"
        ) from None
    except RecursionError:
        raise InvalidArgument(f"row {row}: not valid JSON: nested too deeply") from None


def json_strings(value: Any) -> Iterator[str]:
    """Every string in a parsed JSON value, keys included; walked without recursion, since
    the value may nest as deep as the parser allowed."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _holds_surrogate(value: Any) -> bool:
    """Whether any string in a parsed JSON value holds a surrogate code point."""
    return any(_SURROGATE.search(text) for text in json_strings(value))


class CsvReader(DatasetReader):
    """A header row naming the columns (text, label, optional text_pair), then one row each."""

    format = "csv"
    suffixes = (".csv",)

    def read(self, path: Path) -> Iterator[dict[str, Any]]:
        """Rows are numbered from 1 after the header."""
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start)  # header is line 1, so row = line - 1 + 1
            raise InvalidArgument(f"row {line}: not valid UTF-8; save the file as UTF-8") from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            fieldnames = reader.fieldnames
        except csv.Error as exc:  # e.g. a field over csv.field_size_limit()
            raise InvalidArgument(f"the CSV header row is not valid CSV: {exc}") from None
        if not fieldnames:
            raise InvalidArgument("the CSV file has no header row")
        records = iter(reader)
        for row in itertools.count(1):
            try:
                record = next(records)
            except StopIteration:
                return
            except csv.Error as exc:
                raise InvalidArgument(f"row {row}: not valid CSV: {exc}") from None
            if None in record:
                raise InvalidArgument(f"row {row}: more values than header columns")
            yield {key: value for key, value in record.items() if value is not None}


@hookimpl
def edgetune_register_dataset_readers(register: Callable[[DatasetReader], None]) -> None:
    """Register the JSONL and CSV readers."""
    register(JsonlReader())
    register(CsvReader())
