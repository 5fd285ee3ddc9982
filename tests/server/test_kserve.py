"""inference.GRPCInferenceService (KServe v2) against edgetune.v1.Classify on the same model."""

from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest
from grpc import aio
from transformers import AutoTokenizer

from edgetune.kserve import grpc_predict_v2_pb2 as pb
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

TEXTS = ["the movie was good", "terrible acting", "i love this film"]
LABELS = ["negative", "neutral", "positive"]


def raw_bytes(values: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(v)) + v for v in values)


@pytest.fixture
def v2(channel: aio.Channel) -> grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub:
    return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)


async def classify_scores(channel, texts: list[str]) -> tuple[list[str], np.ndarray]:
    reply = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text=t) for t in texts])
    )
    best = [r.labels[0].label for r in reply.results]
    scores = np.array(
        [[{s.label: s.score for s in r.labels}[n] for n in LABELS] for r in reply.results]
    )
    return best, scores


def text_tensor(
    shape: list[int], typed: list[bytes] | None = None
) -> pb.ModelInferRequest.InferInputTensor:
    tensor = pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=shape)
    if typed is not None:
        tensor.contents.bytes_contents.extend(typed)
    return tensor


async def test_health_and_metadata(v2, server) -> None:
    assert (await v2.ServerLive(pb.ServerLiveRequest())).live
    assert (await v2.ServerReady(pb.ServerReadyRequest())).ready
    assert (await v2.ModelReady(pb.ModelReadyRequest(name="tiny"))).ready  # loaded at start-up
    assert not (await v2.ModelReady(pb.ModelReadyRequest(name="nope"))).ready
    await server.registry.unload("tiny")
    assert not (await v2.ModelReady(pb.ModelReadyRequest(name="tiny", version="1"))).ready
    await server.registry.load("tiny")
    assert (await v2.ModelReady(pb.ModelReadyRequest(name="tiny", version="1"))).ready
    meta = await v2.ServerMetadata(pb.ServerMetadataRequest())
    assert meta.name == "edgetune" and meta.version
    model = await v2.ModelMetadata(pb.ModelMetadataRequest(name="tiny"))
    assert (model.name, list(model.versions), model.platform) == ("tiny", ["1"], "onnxruntime_onnx")
    assert [(t.name, t.datatype, list(t.shape)) for t in model.inputs] == [
        ("text", "BYTES", [-1]),
        ("text_pair", "BYTES", [-1]),
        ("input_ids", "INT64", [-1, -1]),
        ("attention_mask", "INT64", [-1, -1]),
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in model.outputs] == [
        ("labels", "BYTES", [-1]),
        ("scores", "FP32", [-1, 3]),
    ]


@pytest.mark.parametrize("shape", [[3], [3, 1]])
async def test_typed_and_raw_text_give_classify_answers(v2, channel, shape) -> None:
    best, expected = await classify_scores(channel, TEXTS)
    encoded = [t.encode() for t in TEXTS]
    typed = await v2.ModelInfer(
        pb.ModelInferRequest(model_name="tiny", id="r1", inputs=[text_tensor(shape, encoded)])
    )
    assert (typed.model_name, typed.model_version, typed.id) == ("tiny", "1", "r1")
    labels, scores = typed.outputs
    assert list(labels.contents.bytes_contents) == [b.encode() for b in best]
    assert list(scores.shape) == [3, 3]
    np.testing.assert_allclose(
        np.array(scores.contents.fp32_contents).reshape(3, 3), expected, rtol=1e-6
    )

    raw = await v2.ModelInfer(
        pb.ModelInferRequest(
            model_name="tiny",
            inputs=[text_tensor(shape)],
            raw_input_contents=[raw_bytes(encoded)],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="scores")],
        )
    )
    assert [o.name for o in raw.outputs] == ["scores"]
    np.testing.assert_allclose(
        np.frombuffer(raw.raw_output_contents[0], dtype="<f4").reshape(3, 3), expected, rtol=1e-6
    )


async def test_int64_token_ids(v2, channel, repository) -> None:
    tokenizer = AutoTokenizer.from_pretrained(repository.resolve("tiny").path)
    feeds = tokenizer(TEXTS, padding=True, return_tensors="np")
    ids, mask = feeds["input_ids"].astype(np.int64), feeds["attention_mask"].astype(np.int64)
    reply = await v2.ModelInfer(
        pb.ModelInferRequest(
            model_name="tiny",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input_ids", datatype="INT64", shape=list(ids.shape)
                ),
                pb.ModelInferRequest.InferInputTensor(
                    name="attention_mask", datatype="INT64", shape=list(mask.shape)
                ),
            ],
            raw_input_contents=[ids.tobytes(), mask.tobytes()],
        )
    )
    _, expected = await classify_scores(channel, TEXTS)
    np.testing.assert_allclose(
        np.frombuffer(reply.raw_output_contents[1], dtype="<f4").reshape(3, 3), expected, rtol=1e-5
    )


BAD = [
    (
        dict(model_name="nope", inputs=[text_tensor([1], [b"x"])]),
        grpc.StatusCode.NOT_FOUND,
        "model 'nope' not found",
    ),
    (
        dict(model_name="tiny", model_version="9", inputs=[text_tensor([1], [b"x"])]),
        grpc.StatusCode.NOT_FOUND,
        "no version 9",
    ),
    (
        dict(model_name="tiny", inputs=[]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text' or 'image' (BYTES) or 'input_ids' (INT64) is required",
    ),
    (
        dict(
            model_name="tiny",
            inputs=[pb.ModelInferRequest.InferInputTensor(name="text", datatype="FP32", shape=[1])],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text': datatype FP32, expected BYTES",
    ),
    (
        dict(model_name="tiny", inputs=[text_tensor([1, 2], [b"a", b"b"])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text': shape [1, 2], expected [batch] or [batch, 1]",
    ),
    (
        dict(model_name="tiny", inputs=[text_tensor([3], [b"a"])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text': shape [3] needs 3 elements, got 1",
    ),
    (
        dict(
            model_name="tiny",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="BYTES", shape=[1])
            ],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0]: unknown input 'pixels'",
    ),
    (
        dict(model_name="tiny", inputs=[text_tensor([1], [b"\xff"])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "input 'text'[0] is not valid UTF-8",
    ),
    (
        dict(model_name="tiny", inputs=[text_tensor([1], [b" "])]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].text is empty",
    ),
    (
        dict(model_name="tiny", inputs=[text_tensor([1])], raw_input_contents=[b"\x05\x00"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw contents end inside a length prefix",
    ),
    (
        dict(
            model_name="tiny",
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name="input_ids", datatype="INT64", shape=[1, 2]
                )
            ],
            raw_input_contents=[b"\x00" * 8],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 16 raw bytes, got 8",
    ),
    (
        dict(
            model_name="tiny",
            inputs=[text_tensor([1], [b"x"])],
            outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="logits")],
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "outputs[0]: unknown output 'logits'",
    ),
]


@pytest.mark.parametrize(("fields", "code", "message"), BAD)
async def test_bad_v2_requests(v2, fields, code, message) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await v2.ModelInfer(pb.ModelInferRequest(**fields))
    assert caught.value.code() == code
    assert message in caught.value.details()


async def test_unknown_model_metadata_is_not_found(v2) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await v2.ModelMetadata(pb.ModelMetadataRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
