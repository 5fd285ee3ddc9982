"""KServe v2 (Open Inference Protocol) tensors <-> domain objects: inputs from request
tensors, output tensors from results, tensor metadata from a task. No logic beyond
translation and checking that the tensors are well formed."""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgetune.errors import InvalidArgument, quoted
from edgetune.kserve import grpc_predict_v2_pb2 as pb
from edgetune.server.convert import check_count
from edgetune.serving.service import Classification
from edgetune.store import ModelVersion
from edgetune.task import Image, Input, Result, Task, Text, TextPair, TokenIds

PLATFORM = "onnxruntime_onnx"
TEXT, TEXT_PAIR, INPUT_IDS, ATTENTION_MASK = "text", "text_pair", "input_ids", "attention_mask"
IMAGE = "image"
LABELS, SCORES, SPANS = "labels", "scores", "spans"
Tensor = pb.ModelMetadataResponse.TensorMetadata


def metadata_to_pb(
    version: ModelVersion, task: Task | None, versions: Sequence[int]
) -> pb.ModelMetadataResponse:
    """Versions and the tensors the model's task takes and returns."""
    kinds = task.input_kinds if task else ()
    inputs = []
    if Text in kinds:
        inputs.append(Tensor(name=TEXT, datatype="BYTES", shape=[-1]))
    if TextPair in kinds:
        inputs.append(Tensor(name=TEXT_PAIR, datatype="BYTES", shape=[-1]))
    if TokenIds in kinds:
        inputs.append(Tensor(name=INPUT_IDS, datatype="INT64", shape=[-1, -1]))
        inputs.append(Tensor(name=ATTENTION_MASK, datatype="INT64", shape=[-1, -1]))
    if Image in kinds:
        inputs.append(Tensor(name=IMAGE, datatype="BYTES", shape=[-1]))
    outputs = [
        Tensor(name=LABELS, datatype="BYTES", shape=[-1]),
        Tensor(name=SCORES, datatype="FP32", shape=[-1, len(version.manifest.labels)]),
    ]
    if task is not None and task.returns_spans:
        outputs.append(Tensor(name=SPANS, datatype="BYTES", shape=[-1]))
    return pb.ModelMetadataResponse(
        name=version.name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=inputs,
        outputs=outputs,
    )


def infer_response(
    request: pb.ModelInferRequest, answer: Classification, task: Task | None
) -> pb.ModelInferResponse:
    """The outputs the request asks for (all by default), raw when the request was raw.

    `labels`: the best label per input ("" when a task answers with spans only);
    `scores`: every label's score per input, in the model's label order (0 for a label
    the task did not score); `spans` (tasks that return spans): per input, a JSON list
    of {"start", "end", "label", "score", "text"}.
    """
    offered = [LABELS, SCORES] + ([SPANS] if task is not None and task.returns_spans else [])
    wanted = [output.name for output in request.outputs] or offered
    for index, name in enumerate(wanted):
        if name not in offered:
            raise InvalidArgument(
                f"outputs[{index}]: unknown output {name!r}; this model returns "
                + ", ".join(repr(o) for o in offered)
            )
    response = pb.ModelInferResponse(
        model_name=answer.version.name, model_version=str(answer.version.version), id=request.id
    )
    raw = bool(request.raw_input_contents)
    for name in wanted:
        if name == SCORES:
            scores = _scores(answer.results, answer.version.manifest.labels)
            tensor = response.outputs.add(name=SCORES, datatype="FP32", shape=list(scores.shape))
            if raw:
                response.raw_output_contents.append(scores.astype("<f4").tobytes())
            else:
                tensor.contents.fp32_contents.extend(scores.ravel().tolist())
            continue
        if name == LABELS:
            elements = [(r.labels[0].label if r.labels else "").encode() for r in answer.results]
        else:
            elements = [_spans_json(r).encode() for r in answer.results]
        tensor = response.outputs.add(name=name, datatype="BYTES", shape=[len(elements)])
        if raw:
            response.raw_output_contents.append(
                b"".join(struct.pack("<I", len(e)) + e for e in elements)
            )
        else:
            tensor.contents.bytes_contents.extend(elements)
    return response


def _scores(results: list[Result], labels: list[str]) -> np.ndarray[Any, Any]:
    by_label = [{s.label: s.score for s in r.labels} for r in results]
    return np.array([[row.get(label, 0.0) for label in labels] for row in by_label], np.float32)


def _spans_json(result: Result) -> str:
    return json.dumps(
        [
            {"start": s.start, "end": s.end, "label": s.label, "score": s.score, "text": s.text}
            for s in result.spans
        ]
    )


def inputs_from_tensors(request: pb.ModelInferRequest, limit: int) -> list[Input]:
    """edgetune inputs from v2 tensors, at most limit a tensor (checked on the shape, before
    any element is read); INVALID_ARGUMENT names the tensor that is wrong."""
    raw = list(request.raw_input_contents)
    for tensor in request.inputs:
        if tensor.shape:
            check_count(tensor.shape[0], limit, f"input {quoted(tensor.name)}: shape[0]")
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs"
        )
    tensors: dict[str, Any] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in tensors:
            raise InvalidArgument(f"input {tensor.name!r} is given twice")
        if tensor.name in (TEXT, TEXT_PAIR):
            tensors[tensor.name] = _text(tensor, raw[index] if raw else None)
        elif tensor.name == IMAGE:
            tensors[IMAGE] = _bytes_elements(tensor, raw[index] if raw else None)
        elif tensor.name in (INPUT_IDS, ATTENTION_MASK):
            tensors[tensor.name] = _int64_matrix(tensor, raw[index] if raw else None)
        else:
            raise InvalidArgument(
                f"inputs[{index}]: unknown input {tensor.name!r}; "
                f"give {TEXT!r} or {IMAGE!r} (BYTES) or {INPUT_IDS!r} (INT64)"
            )
    return _inputs(tensors)


def _inputs(tensors: dict[str, Any]) -> list[Input]:
    """The inputs the decoded tensors stand for: images, texts (with pairs) or token ids."""
    if IMAGE in tensors:
        return [Image(data) for data in tensors[IMAGE]]
    if TEXT in tensors:
        texts = tensors[TEXT]
        if TEXT_PAIR not in tensors:
            return [Text(t) for t in texts]
        pairs = tensors[TEXT_PAIR]
        if len(pairs) != len(texts):
            raise InvalidArgument(
                f"input {TEXT_PAIR!r} has {len(pairs)} elements; {TEXT!r} has {len(texts)}"
            )
        return [TextPair(t, p) for t, p in zip(texts, pairs, strict=True)]
    if INPUT_IDS in tensors:
        ids = tensors[INPUT_IDS]
        mask = tensors.get(ATTENTION_MASK)
        if mask is not None and mask.shape != ids.shape:
            raise InvalidArgument(
                f"input {ATTENTION_MASK!r} has shape {list(mask.shape)}; "
                f"{INPUT_IDS!r} has {list(ids.shape)}"
            )
        return [
            TokenIds(tuple(row.tolist()), tuple(mask[i].tolist()) if mask is not None else ())
            for i, row in enumerate(ids)
        ]
    raise InvalidArgument(
        f"input {TEXT!r} or {IMAGE!r} (BYTES) or {INPUT_IDS!r} (INT64) is required"
    )


def check_datatype(tensor: Any, expected: str) -> None:
    """:raises InvalidArgument: the tensor's datatype is not `expected`."""
    if tensor.datatype != expected:
        raise InvalidArgument(
            f"input {tensor.name!r}: datatype {tensor.datatype or '(none)'}, expected {expected}"
        )


def _text(tensor: Any, raw: bytes | None) -> list[str]:
    texts = []
    for i, element in enumerate(_bytes_elements(tensor, raw)):
        try:
            texts.append(element.decode("utf-8"))
        except UnicodeDecodeError:
            raise InvalidArgument(f"input {tensor.name!r}[{i}] is not valid UTF-8") from None
    return texts


def _bytes_elements(tensor: Any, raw: bytes | None) -> list[bytes]:
    """The elements of a [batch] or [batch, 1] BYTES tensor."""
    check_datatype(tensor, "BYTES")
    shape = list(tensor.shape)
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {shape}, expected [batch] or [batch, 1]"
        )
    if raw is None and len(tensor.contents.bytes_contents) != shape[0]:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {shape} needs {shape[0]} elements, "
            f"got {len(tensor.contents.bytes_contents)}"
        )
    elements = (
        split_bytes(tensor.name, raw, shape[0])
        if raw is not None
        else list(tensor.contents.bytes_contents)
    )
    if len(elements) != shape[0]:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {shape} needs {shape[0]} elements, got {len(elements)}"
        )
    return elements


def split_bytes(name: str, raw: bytes, expected: int) -> list[bytes]:
    """BYTES raw contents: each element is a 4-byte little-endian length, then the bytes;
    reading stops after one more element than the shape says (so a flood of tiny elements
    costs no more than the shape allows)."""
    elements: list[bytes] = []
    offset = 0
    while offset < len(raw) and len(elements) <= expected:
        if offset + 4 > len(raw):
            raise InvalidArgument(f"input {name!r}: raw contents end inside a length prefix")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise InvalidArgument(f"input {name!r}: raw element longer than the contents")
        elements.append(raw[offset : offset + size])
        offset += size
    return elements


def _int64_matrix(tensor: Any, raw: bytes | None) -> np.ndarray[Any, Any]:
    check_datatype(tensor, "INT64")
    shape = list(tensor.shape)
    if len(shape) != 2 or min(shape) < 1:
        raise InvalidArgument(f"input {tensor.name!r}: shape {shape}, expected [batch, tokens]")
    if raw is not None:
        if len(raw) != shape[0] * shape[1] * 8:
            raise InvalidArgument(
                f"input {tensor.name!r}: shape {shape} needs {shape[0] * shape[1] * 8} raw bytes, "
                f"got {len(raw)}"
            )
        values = np.frombuffer(raw, dtype="<i8")
    else:
        values = np.asarray(tensor.contents.int64_contents, dtype=np.int64)
        if values.size != shape[0] * shape[1]:
            raise InvalidArgument(
                f"input {tensor.name!r}: shape {shape} needs {shape[0] * shape[1]} elements, "
                f"got {values.size}"
            )
    return values.reshape(shape)
