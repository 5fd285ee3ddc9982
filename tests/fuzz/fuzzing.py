"""What the fuzz tests share: hypothesis settings, the check every call must pass, and the
strategies for texts, model names, versions and data-set rows.

Strategies mostly build a well-formed value and then make one part of it wild, so that
examples reach the code behind the first check as often as they hit the checks themselves.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import re
from collections.abc import Awaitable
from typing import Any, TypeVar

import grpc
from grpc import aio
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from PIL import Image as PILImage

from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

LABELS = ["negative", "neutral", "positive"]  # the tiny model of tests/conftest.py
WORDS = ["the", "movie", "was", "good", "bad", "great", "terrible", "film", "plot", "acting"]
VOCAB_SIZE = 79
"""Token ids of the tiny model: 0..78, of which 2 is [CLS] and 3 is [SEP]; 64 at most."""
MAX_TOKENS = 64
TASKS = [
    "text-classification",
    "multi-label-classification",
    "token-classification",
    "image-classification",
]
BROKEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED}
"""INTERNAL / UNKNOWN: an exception nobody handled; DEADLINE_EXCEEDED: a call that hung."""
CALL_TIMEOUT_S = 60
INT64 = st.integers(-(2**63), 2**63 - 1)
_VARYING = re.compile(r"'[^']*'|\"[^\"]*\"|\d+")

FUZZ = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    # One server serves every example of a test; generated files may be large on purpose.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)

T = TypeVar("T")


async def outcome(call: Awaitable[T]) -> tuple[grpc.StatusCode, T | None]:
    """The status a call ends with, and its answer when OK.

    Fails the test on a status that means an unhandled exception or a hang, and on details
    that hold a stack trace or an exception class. Each status is a hypothesis `event`, so
    `--hypothesis-show-statistics` shows how far the examples get.
    """
    try:
        answer = await call
    except aio.AioRpcError as error:
        failure = error
    else:
        event("status OK")
        return grpc.StatusCode.OK, answer
    details = failure.details() or ""
    event(f"status {failure.code().name}: {_VARYING.sub('_', details)[:48]}")
    assert failure.code() not in BROKEN, f"{failure.code()}: {details}"
    assert "Traceback" not in details and "<class '" not in details, details
    return failure.code(), None


async def assert_still_serving(channel: aio.Channel) -> None:
    """The server still classifies a good request."""
    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="the movie was good")]),
        timeout=CALL_TIMEOUT_S,
    )
    assert sorted(s.label for s in reply.results[0].labels) == LABELS


# ---- texts, names, versions ---------------------------------------------------------------

HUGE_TEXTS = ["x" * 201, "é" * 101, "the " * 60_000, "\x00" * 300]
"""Over the test server's max_text_bytes (200); the last is NUL characters."""

sentences = st.lists(st.sampled_from(WORDS), min_size=1, max_size=12).map(" ".join)
texts = st.one_of(
    sentences,
    st.text(max_size=40),  # any code points: controls, NUL, combining marks, RTL ...
    st.text(alphabet=" \t\n\r\x0b\x0c\u3000\u200b\u00a0", max_size=6),  # blank or nearly
    st.sampled_from(HUGE_TEXTS),
)
models = st.one_of(
    st.just("tiny"),
    st.sampled_from(["", "nope", "TINY", "../tiny", "tiny/1", ".", "..", "tiny\x00", "t" * 300]),
    st.text(max_size=20),
)
versions = st.one_of(
    st.sampled_from(["", "1", "latest", " 1 ", "2", "0", "-1", "01", "1.0", "latest/.."]),
    # str.isdigit() is true for the first two, which int() refuses or reads as 1.
    st.sampled_from(["\u00b2", "\u0661", "1" * 5000, "9" * 19, "\x00", "aliases", ".staging"]),
    st.text(max_size=20),
)


def png(width: int = 6, height: int = 4) -> bytes:
    """A small, valid RGB PNG."""
    buffer = io.BytesIO()
    PILImage.new("RGB", (width, height), (200, 30, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- data-set rows and files ---------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
"""Anything a JSON parser can return."""
FIELDS = ["text", "text_pair", "label", "labels", "tokens", "tags", "image"]
wild_rows = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), json_values, max_size=5)
"""Rows with the field names the tasks read (and others), holding any JSON value."""

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
IMAGE_B64 = base64.b64encode(png()).decode()


def good_rows(task: str) -> st.SearchStrategy[dict[str, Any]]:
    """Rows the task accepts."""
    labels = st.sampled_from(["pos", "neg", "maybe"])
    if task == "text-classification":
        pairs = st.none() | sentences
        return st.builds(
            lambda text, pair, label: (
                {"text": text, "label": label} | ({"text_pair": pair} if pair else {})
            ),
            sentences,
            pairs,
            labels,
        )
    if task == "multi-label-classification":
        return st.builds(
            lambda text, chosen: {"text": text, "labels": chosen},
            sentences,
            st.lists(labels, min_size=1, max_size=3, unique=True),
        )
    if task == "token-classification":
        return st.integers(1, 6).flatmap(
            lambda n: st.builds(
                lambda words, tags: {"tokens": words, "tags": tags},
                st.lists(st.sampled_from(WORDS), min_size=n, max_size=n),
                st.lists(st.sampled_from(TAGS), min_size=n, max_size=n),
            )
        )
    images = st.sampled_from([IMAGE_B64, "data:image/png;base64," + IMAGE_B64])
    return st.builds(lambda image, label: {"image": image, "label": label}, images, labels)


def jsonl(rows: list[Any], ascii_only: bool = False) -> bytes:
    """Rows as JSON lines."""
    return "".join(json.dumps(r, ensure_ascii=ascii_only) + "\n" for r in rows).encode()


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """Flat rows as CSV with a header (lists become "a,b" strings, as for multi-label)."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ",".join(v) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue().encode()


MAX_UPLOAD_BYTES = 256 * 1024
"""The data-set size limit of the fuzzed server, so that oversized uploads stay cheap."""

SPECIAL_FILES = {
    # Edge cases for the readers; the regression examples name those that were bugs.
    "deep": b"[" * 100_000,  # nested past the JSON parser's recursion limit
    "long int": b'{"text": "a", "label": ' + b"1" * 5000 + b"}\n",  # past int()'s digit limit
    "surrogate text": b'{"text": "\\ud800", "label": "a"}\n{"text": "b", "label": "c"}\n',
    "surrogate label": b'{"text": "a", "label": "\\udfff"}\n',
    "escaped pair": b'{"text": "a \\ud83d\\ude00", "label": "b"}\n',  # a valid emoji
    "surrogate key": b'{"text": "a", "label": "b", "\\udc00": 1}\n',
    "csv field": b"text,label\n" + b"x" * 140_000 + b",a\n",  # past the csv module's limit
    "csv header field": b"text," + b"x" * 140_000 + b"\na,b\n",
    "open quote": b'text,label\n"never closed,a\n',
    "nul": b"text,label\na\x00b,c\n",
    "bom": b"\xef\xbb\xbf",
    "cr": b"text,label\r" + b"a,b\r" * 3,
    "utf-16": b"\xff\xfe\x00t\x00e\x00x\x00t",
    "over the limit": b"x" * (MAX_UPLOAD_BYTES + 1),
    "blank lines": b"\n" * 1000,
    "nan": b'{"text": NaN, "label": Infinity}\n',
}


def csv_text(header: list[str], rows: list[list[str]], separator: str) -> bytes:
    """CSV joined by hand, so that fields may hold separators, quotes and newlines."""
    lines = [separator.join(header)] + [separator.join(r) for r in rows]
    return "\n".join(lines).encode()


wild_files = st.one_of(
    st.binary(max_size=200),
    st.builds(jsonl, st.lists(wild_rows | json_values, max_size=6), st.booleans()),
    st.builds(
        csv_text,
        st.lists(st.sampled_from(["text", "label", "labels", "text_pair"]) | st.text(max_size=5)),
        st.lists(st.lists(st.text(max_size=10), max_size=4), max_size=5),
        st.sampled_from([",", ";", "\t"]),
    ),
    st.sampled_from(sorted(SPECIAL_FILES.values())),
)
