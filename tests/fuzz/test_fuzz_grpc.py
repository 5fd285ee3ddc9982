"""Property-based fuzzing of the inference calls over real gRPC: Classify (texts, text
pairs, token ids, and image bytes for a text model), undecodable Classify messages, the
model lookups (GetModel, SetAlias, UnloadModel, v2 ModelReady and ModelMetadata) and KServe
v2 ModelInfer (tensor names, datatypes, shapes, contents, raw contents, outputs) get
arbitrary requests; tests/fuzz/test_fuzz_images.py does images on an image model.

Each call must end with a status that names the client's mistake, never INTERNAL or
UNKNOWN (an unhandled exception) nor a stack trace; an answer must have the shape the
contract promises; and after every example the server still classifies a good request.
One in-process server serves all the examples of a test. Each bug these tests found is
pinned as an `@example`.
"""

from __future__ import annotations

import math
import struct

import grpc
import numpy as np
from fuzzing import (
    CALL_TIMEOUT_S,
    FUZZ,
    INT64,
    LABELS,
    MAX_TOKENS,
    VOCAB_SIZE,
    assert_still_serving,
    models,
    outcome,
    png,
    sentences,
    texts,
    versions,
)
from grpc import aio
from hypothesis import example, given
from hypothesis import strategies as st

from edgetune.kserve import grpc_predict_v2_pb2 as v2
from edgetune.kserve import grpc_predict_v2_pb2_grpc as v2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc, models_pb2, models_pb2_grpc

InputTensor = v2.ModelInferRequest.InferInputTensor

# ---- Classify ----------------------------------------------------------------------------

good_ids = st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=1, max_size=MAX_TOKENS)


@st.composite
def good_tokens(draw: st.DrawFn) -> ipb.TokenIds:
    ids = draw(good_ids)
    mask = draw(st.just([]) | st.lists(st.integers(0, 1), min_size=len(ids), max_size=len(ids)))
    return ipb.TokenIds(ids=ids, attention_mask=mask)


@st.composite
def wild_tokens(draw: st.DrawFn) -> ipb.TokenIds:
    """Ids anywhere in int64 and of any length; a mask of any values and length."""
    ids = draw(st.lists(st.integers(0, VOCAB_SIZE + 2) | INT64, max_size=80))
    values = st.integers(0, 1) | INT64
    mask = draw(
        st.just([])
        | st.lists(values, min_size=len(ids), max_size=len(ids))
        | st.lists(values, max_size=80)
    )
    return ipb.TokenIds(ids=ids, attention_mask=mask)


good_inputs = st.one_of(
    sentences.map(lambda text: ipb.Input(text=text)),
    st.builds(ipb.TextPair, text=sentences, text_pair=sentences).map(
        lambda pair: ipb.Input(text_pair=pair)
    ),
    good_tokens().map(lambda tokens: ipb.Input(tokens=tokens)),
)
wild_inputs = st.one_of(
    texts.map(lambda text: ipb.Input(text=text)),
    st.builds(ipb.TextPair, text=texts, text_pair=texts).map(lambda p: ipb.Input(text_pair=p)),
    (st.binary(max_size=64) | st.just(png())).map(lambda data: ipb.Input(image=data)),
    wild_tokens().map(lambda tokens: ipb.Input(tokens=tokens)),
    st.just(ipb.Input()),  # no kind set
)
top_ks = st.integers(0, 2**32 - 1)


@st.composite
def classify_requests(draw: st.DrawFn) -> ipb.ClassifyRequest:
    """Half well-formed with at most one wild field, half wild throughout."""
    if draw(st.booleans()):
        return ipb.ClassifyRequest(
            model=draw(models),
            version=draw(versions),
            inputs=draw(st.lists(wild_inputs, max_size=10)),
            top_k=draw(top_ks),
        )
    request = ipb.ClassifyRequest(
        model="tiny",
        version=draw(st.sampled_from(["", "1", "latest"])),
        inputs=draw(st.lists(good_inputs, min_size=1, max_size=8)),
        top_k=draw(st.integers(0, 4)),
    )
    match draw(st.sampled_from(["none", "model", "version", "input", "top_k"])):
        case "model":
            request.model = draw(models)
        case "version":
            request.version = draw(versions)
        case "input":
            request.inputs[draw(st.integers(0, len(request.inputs) - 1))].CopyFrom(
                draw(wild_inputs)
            )
        case "top_k":
            request.top_k = draw(top_ks)
    return request


def check_classify_answer(request: ipb.ClassifyRequest, reply: ipb.ClassifyResponse) -> None:
    assert reply.model == "tiny" and reply.version == "1"
    assert len(reply.results) == len(request.inputs)
    wanted = min(request.top_k or len(LABELS), len(LABELS))
    for result in reply.results:
        labels = [s.label for s in result.labels]
        assert len(labels) == wanted and set(labels) <= set(LABELS)
        assert all(math.isfinite(s.score) and 0 <= s.score <= 1 for s in result.labels)


def tokens_request(ids: list[int], mask: list[int]) -> ipb.ClassifyRequest:
    tokens = ipb.TokenIds(ids=ids, attention_mask=mask)
    return ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(tokens=tokens)])


@FUZZ
@given(request=classify_requests())
# Regressions: a version str.isdigit() takes for a number but int() refuses (INTERNAL).
@example(request=ipb.ClassifyRequest(model="tiny", version="\u00b2", inputs=[ipb.Input(text="a")]))
@example(
    request=ipb.ClassifyRequest(model="tiny", version="1" * 5000, inputs=[ipb.Input(text="a")])
)
@example(request=tokens_request([2, 7, 3], [1, 2**40, 1]))  # a mask past 0 and 1
@example(request=ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="é" * 2**20)]))
async def test_classify_answers_any_request_with_a_status(
    channel: aio.Channel, request: ipb.ClassifyRequest
) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    code, reply = await outcome(stub.Classify(request, timeout=CALL_TIMEOUT_S))
    if code == grpc.StatusCode.OK:
        assert reply is not None
        check_classify_answer(request, reply)
    await assert_still_serving(channel)


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand so that it may hold anything."""
    size, length = len(payload), bytearray()
    while True:
        byte, size = size & 0x7F, size >> 7
        length.append(byte | (0x80 if size else 0))
        if not size:
            break
    return bytes([number << 3 | 2]) + bytes(length) + payload


raw_classify_requests = st.one_of(
    st.binary(max_size=64),  # anything at all: corrupt wire format, unknown fields ...
    st.binary(min_size=1, max_size=12).map(lambda junk: field(1, b"tiny" + junk + b"\xff")),
    st.binary(min_size=1, max_size=12).map(  # inputs[0].text that is not UTF-8
        lambda junk: field(1, b"tiny") + field(3, field(1, junk + b"\xc3"))
    ),
)


@FUZZ
@given(payload=raw_classify_requests)
# Regressions: the parser's exception reached the client as UNKNOWN, naming its class.
@example(payload=field(1, b"tiny") + field(3, field(1, b"\xff\xfe")))
@example(payload=b"\x0a\x05ti")  # a field cut short
async def test_undecodable_classify_requests_are_invalid_arguments(
    channel: aio.Channel, payload: bytes
) -> None:
    """Bytes that are no ClassifyRequest, or hold a string that is not UTF-8, are the
    client's mistake: INVALID_ARGUMENT."""
    call = channel.unary_unary("/edgetune.v1.Inference/Classify")
    code, _ = await outcome(call(payload, timeout=CALL_TIMEOUT_S))
    try:
        ipb.ClassifyRequest.FromString(payload)
    except Exception:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    await assert_still_serving(channel)


# ---- model lookups -------------------------------------------------------------------------


@FUZZ
@given(name=models, version=versions, alias=versions)
@example(name="tiny", version="\u00b2", alias="latest")  # regression: INTERNAL
@example(name="tiny", version="1" * 5000, alias="latest")  # regression: INTERNAL
async def test_model_lookups_answer_any_name_and_version_with_a_status(
    channel: aio.Channel, name: str, version: str, alias: str
) -> None:
    models_stub = models_pb2_grpc.ModelsStub(channel)
    kserve = v2_grpc.GRPCInferenceServiceStub(channel)
    await outcome(models_stub.GetModel(models_pb2.GetModelRequest(name=name, version=version)))
    await outcome(kserve.ModelReady(v2.ModelReadyRequest(name=name, version=version)))
    await outcome(kserve.ModelMetadata(v2.ModelMetadataRequest(name=name, version=version)))
    # Pointing an alias at version 1 (the only one) leaves "tiny" serving; unloading it
    # would not, so UnloadModel only gets the other names.
    code, _ = await outcome(
        models_stub.SetAlias(models_pb2.SetAliasRequest(name=name, version=version, alias=alias))
    )
    if code == grpc.StatusCode.OK:
        assert name == "tiny" and int(version) == 1
    if name != "tiny":
        request = models_pb2.UnloadModelRequest(name=name, version=version)
        await outcome(models_stub.UnloadModel(request))
    await assert_still_serving(channel)


# ---- KServe v2 ModelInfer ----------------------------------------------------------------

TENSOR_NAMES = ["text", "text_pair", "input_ids", "attention_mask", "image"]
DATATYPES = ["BYTES", "INT64", "FP32", "INT32", "BOOL", "", "bytes"]


def bytes_tensor(name: str, elements: list[bytes], shape: list[int]) -> InputTensor:
    tensor = InputTensor(name=name, datatype="BYTES", shape=shape)
    tensor.contents.bytes_contents.extend(elements)
    return tensor


def int64_tensor(name: str, values: list[int], shape: list[int]) -> InputTensor:
    tensor = InputTensor(name=name, datatype="INT64", shape=shape)
    tensor.contents.int64_contents.extend(values)
    return tensor


@st.composite
def good_tensors(draw: st.DrawFn) -> list[InputTensor]:
    """The inputs of a valid request: texts, text pairs, or token ids with a mask."""
    batch = draw(st.integers(1, 8))
    kind = draw(st.sampled_from(["text", "text_pair", "input_ids"]))
    if kind == "input_ids":
        width = draw(st.integers(1, MAX_TOKENS))
        shape, size = [batch, width], batch * width
        ids = draw(st.lists(st.integers(0, VOCAB_SIZE - 1), min_size=size, max_size=size))
        mask = draw(st.lists(st.integers(0, 1), min_size=size, max_size=size))
        tensors = [int64_tensor("input_ids", ids, shape)]
        return tensors + (
            [int64_tensor("attention_mask", mask, shape)] if draw(st.booleans()) else []
        )
    shape = draw(st.sampled_from([[batch], [batch, 1]]))
    names = ["text", "text_pair"] if kind == "text_pair" else ["text"]
    return [
        bytes_tensor(
            name, draw(st.lists(sentences.map(str.encode), min_size=batch, max_size=batch)), shape
        )
        for name in names
    ]


@st.composite
def wild_tensors(draw: st.DrawFn) -> InputTensor:
    """Any name, datatype, shape and contents."""
    name = draw(st.sampled_from(TENSOR_NAMES) | st.text(max_size=10))
    datatype = draw(st.sampled_from(DATATYPES) | st.text(max_size=6))
    batch, width = draw(st.integers(0, 10)), draw(st.integers(1, 70))
    shape = draw(
        st.sampled_from([[batch], [batch, 1], [batch, width], [width, batch]])
        | st.lists(st.integers(-2, 12), max_size=3)
        | st.lists(INT64, max_size=3)
    )
    tensor = InputTensor(name=name, datatype=datatype, shape=shape)
    contents = tensor.contents
    match draw(st.sampled_from(["bytes", "int64", "fp32", "int", "none"])):
        case "bytes":  # the binary elements are mostly not UTF-8
            element = texts.map(str.encode) | st.binary(max_size=16)
            contents.bytes_contents.extend(draw(st.lists(element, max_size=10)))
        case "int64":
            product = math.prod(shape) if shape else 0
            size = product if 0 <= product <= 600 else 4
            values = st.integers(0, VOCAB_SIZE) | INT64
            contents.int64_contents.extend(
                draw(st.lists(values, min_size=size, max_size=size) | st.lists(values, max_size=20))
            )
        case "fp32":
            contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=8)))
        case "int":
            contents.int_contents.extend(
                draw(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=8))
            )
    return tensor


def to_raw(tensor: InputTensor) -> bytes:
    """The tensor's typed contents as raw bytes (the typed contents cleared)."""
    contents = tensor.contents
    if contents.bytes_contents:
        raw = b"".join(struct.pack("<I", len(e)) + e for e in contents.bytes_contents)
    else:
        raw = np.asarray(contents.int64_contents, dtype="<i8").tobytes()
    tensor.ClearField("contents")
    return raw


@st.composite
def infer_requests(draw: st.DrawFn) -> v2.ModelInferRequest:
    """A valid request with at most one part made wild, typed or raw."""
    request = v2.ModelInferRequest(model_name="tiny", id=draw(st.text(max_size=8)))
    request.inputs.extend(draw(good_tensors()))
    wanted = st.sampled_from(["labels", "scores"])
    outputs = draw(st.lists(wanted, max_size=2))
    match draw(
        st.sampled_from(["none", "none", "model", "version", "tensor", "extra", "drop", "outputs"])
    ):
        case "model":
            request.model_name = draw(models)
        case "version":
            request.model_version = draw(versions)
        case "tensor":
            request.inputs[draw(st.integers(0, len(request.inputs) - 1))].CopyFrom(
                draw(wild_tensors())
            )
        case "extra":
            request.inputs.insert(draw(st.integers(0, len(request.inputs))), draw(wild_tensors()))
        case "drop":
            del request.inputs[draw(st.integers(0, len(request.inputs) - 1))]
        case "outputs":
            outputs = draw(
                st.lists(wanted | st.sampled_from(["spans", ""]) | st.text(max_size=8), max_size=3)
            )
    request.outputs.extend(v2.ModelInferRequest.InferRequestedOutputTensor(name=n) for n in outputs)
    mode = draw(st.sampled_from(["typed", "raw", "raw, then junk"]))
    if mode != "typed":
        request.raw_input_contents.extend(to_raw(t) for t in request.inputs)
    if mode == "raw, then junk":
        junk = draw(st.lists(st.binary(max_size=24), min_size=1, max_size=3))
        if request.raw_input_contents and draw(st.booleans()):
            request.raw_input_contents[0] = junk[0]
        else:
            request.raw_input_contents.extend(junk)
    return request


def check_infer_answer(request: v2.ModelInferRequest, reply: v2.ModelInferResponse) -> None:
    assert reply.model_name == "tiny" and reply.model_version == "1" and reply.id == request.id
    names = [o.name for o in reply.outputs]
    assert names == ([o.name for o in request.outputs] or ["labels", "scores"])
    for index, output in enumerate(reply.outputs):
        if output.name == "scores":
            assert output.datatype == "FP32" and output.shape[1] == len(LABELS)
            if request.raw_input_contents:
                scores = np.frombuffer(reply.raw_output_contents[index], dtype="<f4")
            else:
                scores = np.asarray(output.contents.fp32_contents)
            assert scores.size == output.shape[0] * len(LABELS)
            assert np.all(np.isfinite(scores) & (scores >= 0) & (scores <= 1))


@FUZZ
@given(request=infer_requests())
@example(  # a mask past 0 and 1
    request=v2.ModelInferRequest(
        model_name="tiny",
        inputs=[
            int64_tensor("input_ids", [2, 7, 3], [1, 3]),
            int64_tensor("attention_mask", [1, -(2**63), 1], [1, 3]),
        ],
    )
)
@example(  # regression: INTERNAL
    request=v2.ModelInferRequest(
        model_name="tiny", model_version="\u00b2", inputs=[bytes_tensor("text", [b"a"], [1])]
    )
)
async def test_model_infer_answers_any_request_with_a_status(
    channel: aio.Channel, request: v2.ModelInferRequest
) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    code, reply = await outcome(stub.ModelInfer(request, timeout=CALL_TIMEOUT_S))
    if code == grpc.StatusCode.OK:
        assert reply is not None
        check_infer_answer(request, reply)
    await assert_still_serving(channel)
