"""The data-set reader contract: how a file of labelled examples becomes rows.

Readers are registered by plugins (`edgetune_register_dataset_readers`); the built-in ones
read JSONL and CSV. A reader only parses: it yields one dict per example and leaves
checking fields to the task (`Task.example_labels`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar


class DatasetReader(ABC):
    """Parses one file format into example dicts."""

    format: ClassVar[str]
    """Format name clients give in an upload, e.g. "jsonl"."""
    suffixes: ClassVar[tuple[str, ...]]
    """File name suffixes that mean this format, e.g. (".jsonl", ".ndjson")."""

    @abstractmethod
    def read(self, path: Path) -> Iterator[dict[str, Any]]:
        """Yield one dict per example, in file order.

        Raise `edgetune.errors.InvalidArgument` naming the row (1-based) for a row that
        cannot be parsed: bad syntax, bad encoding, missing columns.
        """
