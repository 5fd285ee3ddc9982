"""KServe v2 tensors <-> domain objects, without a server (server/convert_v2.py)."""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edgetune.errors import InvalidArgument
from edgetune.kserve import grpc_predict_v2_pb2 as pb
from edgetune.server import convert_v2
from edgetune.serving.service import Classification
from edgetune.task import Image, LabelScore, Result, Span, Text, TextPair, TokenIds

LABELS = ["negative", "positive"]
Tensor = pb.ModelInferRequest.InferInputTensor


def raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


def bytes_tensor(name: str, values: list[bytes], shape: list[int] | None = None) -> Any:
    tensor = Tensor(name=name, datatype="BYTES", shape=shape or [len(values)])
    tensor.contents.bytes_contents.extend(values)
    return tensor


def request(*tensors: Any, raw: list[bytes] | None = None, outputs: list[str] = ()) -> Any:
    message = pb.ModelInferRequest(model_name="m", id="call-1", inputs=list(tensors))
    message.raw_input_contents.extend(raw or [])
    for name in outputs:
        message.outputs.add(name=name)
    return message


def refused(message: Any, limit: int = 8) -> str:
    with pytest.raises(InvalidArgument) as caught:
        convert_v2.inputs_from_tensors(message, limit)
    return caught.value.message


def test_texts_and_pairs_typed_and_raw() -> None:
    typed = request(bytes_tensor("text", [b"good", b"bad"]))
    assert convert_v2.inputs_from_tensors(typed, 8) == [Text("good"), Text("bad")]
    raw = request(
        Tensor(name="text", datatype="BYTES", shape=[2, 1]),
        Tensor(name="text_pair", datatype="BYTES", shape=[2]),
        raw=[raw_bytes([b"a", b"b"]), raw_bytes([b"x", b"y"])],
    )
    assert convert_v2.inputs_from_tensors(raw, 8) == [TextPair("a", "x"), TextPair("b", "y")]


def test_images_and_token_ids() -> None:
    images = request(bytes_tensor("image", [b"\x89PNG"]))
    assert convert_v2.inputs_from_tensors(images, 8) == [Image(b"\x89PNG")]
    ids = Tensor(name="input_ids", datatype="INT64", shape=[2, 2])
    ids.contents.int64_contents.extend([1, 2, 3, 4])
    mask = Tensor(name="attention_mask", datatype="INT64", shape=[2, 2])
    raw_mask = np.array([[1, 1], [1, 0]], "<i8").tobytes()
    typed_ids = np.array([[1, 2], [3, 4]], "<i8").tobytes()
    assert convert_v2.inputs_from_tensors(request(ids, mask, raw=[typed_ids, raw_mask]), 8) == [
        TokenIds((1, 2), (1, 1)),
        TokenIds((3, 4), (1, 0)),
    ]
    assert convert_v2.inputs_from_tensors(request(ids), 8)[1] == TokenIds((3, 4))


def test_the_count_is_refused_on_the_shape_before_any_element_is_read() -> None:
    huge = Tensor(name="text", datatype="BYTES", shape=[10**9])
    assert refused(request(huge)) == "input 'text': shape[0] has 1000000000 items; the limit is 8"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (request(bytes_tensor("txt", [b"a"])), "inputs[0]: unknown input 'txt'"),
        (
            request(bytes_tensor("text", [b"a"]), bytes_tensor("text", [b"b"])),
            "input 'text' is given twice",
        ),
        (request(), "input 'text' or 'image' (BYTES) or 'input_ids' (INT64) is required"),
        (
            request(Tensor(name="text", datatype="FP32", shape=[1])),
            "input 'text': datatype FP32, expected BYTES",
        ),
        (request(bytes_tensor("text", [b"\xff"])), "input 'text'[0] is not valid UTF-8"),
        (
            request(bytes_tensor("text", [b"a"], shape=[2])),
            "input 'text': shape [2] needs 2 elements, got 1",
        ),
        (
            request(bytes_tensor("text", [b"a"], shape=[1, 2])),
            "input 'text': shape [1, 2], expected [batch] or [batch, 1]",
        ),
        (
            request(bytes_tensor("text", [b"a"]), raw=[b"", b""]),
            "raw_input_contents has 2 entries for 1 inputs",
        ),
        (
            request(bytes_tensor("text", [b"a", b"b"]), bytes_tensor("text_pair", [b"x"])),
            "input 'text_pair' has 1 elements; 'text' has 2",
        ),
        (
            request(Tensor(name="input_ids", datatype="INT64", shape=[1, 2]), raw=[b"\0" * 8]),
            "input 'input_ids': shape [1, 2] needs 16 raw bytes, got 8",
        ),
        (
            request(Tensor(name="input_ids", datatype="INT64", shape=[3])),
            "input 'input_ids': shape [3], expected [batch, tokens]",
        ),
    ],
)
def test_malformed_tensors_are_refused_naming_the_tensor(message: Any, expected: str) -> None:
    assert refused(message).startswith(expected)


def test_raw_bytes_are_split_by_their_length_prefixes() -> None:
    assert convert_v2.split_bytes("t", raw_bytes([b"ab", b"", b"c"]), 3) == [b"ab", b"", b"c"]
    # Reading stops one element past the shape: a flood of tiny elements is not all read.
    assert len(convert_v2.split_bytes("t", raw_bytes([b"x"] * 1000), 2)) == 3
    with pytest.raises(InvalidArgument, match="end inside a length prefix"):
        convert_v2.split_bytes("t", b"\x01\x00", 1)
    with pytest.raises(InvalidArgument, match="longer than the contents"):
        convert_v2.split_bytes("t", struct.pack("<I", 9) + b"abc", 1)


def answer() -> Classification:
    version: Any = SimpleNamespace(name="m", version=3, manifest=SimpleNamespace(labels=LABELS))
    spans = [Span(0, 4, "positive", 0.5, "good")]
    return Classification(
        version,
        [
            Result(labels=[LabelScore("positive", 0.75), LabelScore("negative", 0.25)]),
            Result(labels=[], spans=spans),
        ],
    )


def test_outputs_typed_and_raw() -> None:
    task: Any = SimpleNamespace(returns_spans=True)
    typed = convert_v2.infer_response(request(), answer(), task)
    assert (typed.model_name, typed.model_version, typed.id) == ("m", "3", "call-1")
    assert [o.name for o in typed.outputs] == ["labels", "scores", "spans"]
    assert list(typed.outputs[0].contents.bytes_contents) == [b"positive", b""]
    assert list(typed.outputs[1].shape) == [2, 2]
    assert list(typed.outputs[1].contents.fp32_contents) == [0.25, 0.75, 0.0, 0.0]
    spans = json.loads(typed.outputs[2].contents.bytes_contents[1])
    assert spans == [{"start": 0, "end": 4, "label": "positive", "score": 0.5, "text": "good"}]

    raw = convert_v2.infer_response(request(raw=[b""], outputs=["scores"]), answer(), None)
    assert [o.name for o in raw.outputs] == ["scores"]
    scores = np.frombuffer(raw.raw_output_contents[0], "<f4").reshape(2, 2)
    assert scores.tolist() == [[0.25, 0.75], [0.0, 0.0]]


def test_an_output_the_model_does_not_return_is_refused() -> None:
    with pytest.raises(InvalidArgument) as caught:
        convert_v2.infer_response(request(outputs=["labels", "spans"]), answer(), None)
    assert caught.value.message == (
        "outputs[1]: unknown output 'spans'; this model returns 'labels', 'scores'"
    )


def test_metadata_lists_the_tensors_of_the_task() -> None:
    version: Any = SimpleNamespace(name="m", manifest=SimpleNamespace(labels=LABELS))
    task: Any = SimpleNamespace(input_kinds=(Text, TokenIds), returns_spans=False)
    meta = convert_v2.metadata_to_pb(version, task, [1, 2])
    assert (meta.name, list(meta.versions), meta.platform) == ("m", ["1", "2"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("text", "BYTES", [-1]),
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert [(t.name, list(t.shape)) for t in meta.outputs] == [
        ("labels", [-1]),
        ("scores", [-1, 2]),
    ]
    assert not convert_v2.metadata_to_pb(version, None, [1]).inputs  # no plugin serves it
