"""What the client commands share: the channel from their flags, readable job states, the
labels of import-model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import grpc

from edgetune.client import open_channel
from edgetune.errors import InvalidArgument, quoted
from edgetune.v1 import finetuning_pb2


def client_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel for a client command's --address, TLS flags and --token."""
    return open_channel(
        args.address,
        ca_file=args.tls_ca,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
        token=args.token,
    )


def state_name(state: int) -> str:
    """ "running" for JOB_STATE_RUNNING."""
    return str(finetuning_pb2.JobState.Name(state)).removeprefix("JOB_STATE_").lower()


MAX_LABELS_FILE_BYTES = 1 << 20
"""Largest --labels-file: label names and one-line descriptions, never a data set."""


def read_labels(labels: str | None, labels_file: str | None) -> tuple[list[str], dict[str, str]]:
    """(labels, descriptions) from --labels (comma-separated names) or --labels-file.

    The file is JSON: a list of label names, or an object mapping each label to what it
    means ({"sport": "football, tennis, athletics results"}; "" for none), in label order.
    InvalidArgument names the file and what is wrong: a label given twice (JSON objects
    would keep only the last), a value that is not a string.
    """
    if labels and labels_file:
        raise InvalidArgument("--labels and --labels-file: give one of them")
    if not labels_file:
        return ([label.strip() for label in labels.split(",")] if labels else []), {}
    path = Path(labels_file)
    try:
        if path.stat().st_size > MAX_LABELS_FILE_BYTES:
            raise InvalidArgument(
                f"--labels-file {path}: larger than {MAX_LABELS_FILE_BYTES} bytes"
            )
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"--labels-file {path}: {exc}") from None
    if isinstance(data, list) and all(isinstance(label, str) for label in data):
        return list(data), {}
    if isinstance(data, dict) and all(isinstance(text, str) for text in data.values()):
        return list(data), {label: text for label, text in data.items() if text.strip()}
    raise InvalidArgument(
        f"--labels-file {path}: must be a JSON list of label names or an object mapping "
        "each label to its description (a string)"
    )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise InvalidArgument(f"--labels-file: label {quoted(key)} is given twice")
        seen[key] = value
    return seen
