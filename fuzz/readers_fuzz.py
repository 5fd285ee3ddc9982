"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of the built-in data-set readers and
the row checks of the text tasks: every input is read as a JSONL file and as a CSV file,
and the rows of each file that parses go through `example_labels` of text-classification,
multi-label-classification and token-classification (as an upload does).

A finding is any exception other than `edgetune.errors.InvalidArgument` (which the server
would answer as INTERNAL), or a row holding a string that is not valid Unicode. A long job
outside CI (see fuzz/README.md):

    .venv/bin/python fuzz/readers_fuzz.py -max_total_time=600

Without corpus folders on the command line it starts from fuzz/seeds/readers and keeps what
it learns in a temporary folder; crash files go to the temporary folder it prints, unless
`-artifact_prefix=` says otherwise.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["edgetune"]):
    from edgetune.errors import InvalidArgument
    from edgetune.plugins.multi_label import MultiLabelClassification
    from edgetune.plugins.readers import CsvReader, JsonlReader, json_strings
    from edgetune.plugins.text_classification import TextClassification
    from edgetune.plugins.token_classification import TokenClassification
    from edgetune.training.datasets import label_counts


def _scratch_root() -> str | None:
    """tmpfs where there is one: every input is written to a file."""
    return "/dev/shm" if os.path.isdir("/dev/shm") else None


SEEDS = Path(__file__).parent / "seeds" / "readers"
DICTIONARY = Path(__file__).parent / "readers.dict"
WORK = Path(tempfile.mkdtemp(prefix="edgetune-readers-fuzz-", dir=_scratch_root()))
READERS = (JsonlReader(), CsvReader())
TASKS = (TextClassification(), MultiLabelClassification(), TokenClassification())
FILE = WORK / "data"


def test_one_input(data: bytes) -> None:
    """Read data with each reader; check the rows of each file that parses with each task."""
    FILE.write_bytes(data)
    for reader in READERS:
        try:
            rows = list(reader.read(FILE))
        except InvalidArgument:
            continue
        for row in rows:
            if not isinstance(row, dict):
                raise TypeError(f"{reader.format} returned {type(row).__name__}, not a dict")
            for text in json_strings(row):
                text.encode("utf-8")  # UnicodeEncodeError: a lone surrogate got through
        if not rows:
            continue
        for task in TASKS:
            with contextlib.suppress(InvalidArgument):
                label_counts(task, rows)


def main() -> None:
    args = list(sys.argv)
    if not any(not arg.startswith("-") for arg in args[1:]):
        args += [str(WORK / "corpus"), str(SEEDS)]
        (WORK / "corpus").mkdir()
    if not any(arg.startswith("-artifact_prefix=") for arg in args):
        args.append(f"-artifact_prefix={WORK}/")
    if not any(arg.startswith("-max_len=") for arg in args):
        args.append("-max_len=8192")
    if not any(arg.startswith("-dict=") for arg in args):
        args.append(f"-dict={DICTIONARY}")
    print(f"readers_fuzz: corpus and findings under {WORK}", file=sys.stderr)
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
