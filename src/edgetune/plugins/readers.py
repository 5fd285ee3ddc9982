"""Built-in data-set readers: JSONL and CSV, registered like third-party readers."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from edgetune.data import DatasetReader
from edgetune.errors import InvalidArgument
from edgetune.plugins import hookimpl


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
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise InvalidArgument(f"row {row}: not valid JSON: {exc.msg}") from None
                if not isinstance(value, dict):
                    raise InvalidArgument(f"row {row}: expected a JSON object")
                yield value


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
        if not reader.fieldnames:
            raise InvalidArgument("the CSV file has no header row")
        for row, record in enumerate(reader, start=1):
            if None in record:
                raise InvalidArgument(f"row {row}: more values than header columns")
            yield {key: value for key, value in record.items() if value is not None}


@hookimpl
def edgetune_register_dataset_readers(register: Callable[[DatasetReader], None]) -> None:
    """Register the JSONL and CSV readers."""
    register(JsonlReader())
    register(CsvReader())
