"""edgetune.v1.Inference over real gRPC against ONNX Runtime run directly."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from grpc import aio
from tokenizers import Tokenizer
from transformers import AutoTokenizer

from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as pb
from edgetune.v1 import inference_pb2_grpc

TEXTS = ["the movie was good", "terrible acting and a boring plot", "i love this film"]


def classify(**kwargs: object) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(**kwargs)  # type: ignore[arg-type]


def direct_scores(folder: Path, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
    """Softmax scores from ONNX Runtime fed by the transformers tokenizer (no edgetune code)."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    feeds = tokenizer(texts, pairs, padding=True, return_tensors="np")
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    (logits,) = session.run(None, {k: v.astype(np.int64) for k, v in feeds.items() if k in names})
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


@pytest.fixture
def stub(channel: aio.Channel) -> inference_pb2_grpc.InferenceStub:
    return inference_pb2_grpc.InferenceStub(channel)


async def test_a_long_text_is_answered_from_the_mean_logits_of_its_windows(
    stub, repository: ModelRepository
) -> None:
    """A version whose task options read long texts in 4 windows of 16 tokens
    (`TextClassifier.read_windows`): the answer is the softmax of its windows' mean logits."""
    tiny = repository.resolve("tiny")
    with repository.staging() as staged:
        for path in tiny.path.iterdir():
            if path.is_file() and path.name != "manifest.json":
                shutil.copy(path, staged / path.name)
        manifest = tiny.manifest.model_copy(deep=True)
        manifest.task_options = {**manifest.task_options, "max_length": 16, "windows": 4}
        repository.publish("windowed", staged, manifest)
    text = " ".join(["great", "i", "a", "is", "fun"] * 10)  # 50 words, 169 bytes
    reply = await stub.Classify(classify(model="windowed", inputs=[pb.Input(text=text)]))
    tokenizer = Tokenizer.from_file(str(tiny.path / "tokenizer.json"))
    tokenizer.enable_truncation(16, stride=4)
    first = tokenizer.encode(text)
    assert len(first.overflowing) == 4  # 50 words, 14 a window: five windows, four read
    windows = [first, *first.overflowing[:3]]
    session = ort.InferenceSession(str(tiny.path / "model.onnx"))
    feeds = {
        "input_ids": np.array([w.ids for w in windows]),
        "attention_mask": np.array([w.attention_mask for w in windows]),
        "token_type_ids": np.array([w.type_ids for w in windows]),
    }
    names = {i.name for i in session.get_inputs()}
    logits = session.run(None, {k: v for k, v in feeds.items() if k in names})[0].mean(axis=0)
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    served = {s.label: s.score for s in reply.results[0].labels}
    np.testing.assert_allclose(
        [served[label] for label in tiny.manifest.labels], expected, atol=1e-5
    )


async def test_classify_matches_direct_onnxruntime(stub, repository: ModelRepository) -> None:
    version = repository.resolve("tiny")
    expected = direct_scores(version.path, TEXTS)
    reply = await stub.Classify(
        classify(model="tiny", inputs=[pb.Input(text=t) for t in TEXTS], top_k=0)
    )
    assert (reply.model, reply.version) == ("tiny", "1")
    labels = version.manifest.labels
    for row, result in zip(expected, reply.results, strict=True):
        got = {s.label: s.score for s in result.labels}
        np.testing.assert_allclose([got[label] for label in labels], row, rtol=1e-4, atol=1e-6)
        assert [s.score for s in result.labels] == sorted(got.values(), reverse=True)
        assert [s.selected for s in result.labels] == [True, False, False]


async def test_text_pairs_and_token_ids_match_direct_onnxruntime(stub, repository) -> None:
    version = repository.resolve("tiny")
    expected = direct_scores(version.path, ["the plot"], ["was fun"])[0]
    tokenizer = AutoTokenizer.from_pretrained(version.path)
    ids = tokenizer("the plot", "was fun")["input_ids"]
    reply = await stub.Classify(
        classify(
            model="tiny",
            inputs=[
                pb.Input(text_pair=pb.TextPair(text="the plot", text_pair="was fun")),
                pb.Input(tokens=pb.TokenIds(ids=ids)),
                pb.Input(text="a much longer text than the others so padding matters"),
            ],
        )
    )
    by_label = [{s.label: s.score for s in r.labels} for r in reply.results[:2]]
    for got in by_label:
        np.testing.assert_allclose(
            [got[label] for label in version.manifest.labels], expected, rtol=1e-4, atol=1e-6
        )


async def test_top_k_and_explicit_version(stub) -> None:
    reply = await stub.Classify(
        classify(model="tiny", version="1", inputs=[pb.Input(text="good")], top_k=1)
    )
    assert len(reply.results[0].labels) == 1
    alias = await stub.Classify(
        classify(model="tiny", version="latest", inputs=[pb.Input(text="good")], top_k=1)
    )
    assert alias.results[0].labels[0].label == reply.results[0].labels[0].label


async def test_classify_stream_answers_each_request_in_order(stub) -> None:
    requests = [
        pb.ClassifyStreamRequest(
            id="a", request=classify(model="tiny", inputs=[pb.Input(text="good")])
        ),
        pb.ClassifyStreamRequest(id="b", request=classify(model="tiny", inputs=[])),
        pb.ClassifyStreamRequest(
            id="c", request=classify(model="missing", inputs=[pb.Input(text="x")])
        ),
        pb.ClassifyStreamRequest(
            id="d",
            request=classify(model="tiny", inputs=[pb.Input(text="bad"), pb.Input(text="fun")]),
        ),
    ]

    async def source():
        for request in requests:
            yield request

    replies = [reply async for reply in stub.ClassifyStream(source())]
    assert [r.id for r in replies] == ["a", "b", "c", "d"]
    assert replies[0].WhichOneof("outcome") == "response"
    assert replies[1].error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert "inputs is empty" in replies[1].error.message
    assert replies[2].error.code == grpc.StatusCode.NOT_FOUND.value[0]
    assert len(replies[3].response.results) == 2


BAD_REQUESTS = [
    (
        dict(model="nope", inputs=[pb.Input(text="x")]),
        grpc.StatusCode.NOT_FOUND,
        "model 'nope' not found",
    ),
    (
        dict(model="tiny", version="7", inputs=[pb.Input(text="x")]),
        grpc.StatusCode.NOT_FOUND,
        "no version 7",
    ),
    (
        dict(model="tiny", version="prod", inputs=[pb.Input(text="x")]),
        grpc.StatusCode.NOT_FOUND,
        "no alias 'prod'",
    ),
    (
        dict(model="", inputs=[pb.Input(text="x")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model is required",
    ),
    (dict(model="tiny", inputs=[]), grpc.StatusCode.INVALID_ARGUMENT, "inputs is empty"),
    (
        dict(model="tiny", inputs=[pb.Input(text="ok"), pb.Input(text="  ")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[1].text is empty",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(text="x" * 201)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].text is 201 bytes; the limit is 200",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(text="é" * 101)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].text is 202 bytes",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(text="x")] * 9),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs has 9 items; the limit is 8",
    ),
    (
        dict(model="tiny", inputs=[pb.Input()]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0] has no input set",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(text="x"), pb.Input(image=b"\x89PNG")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[1]: model 'tiny' (task text-classification) does not take image input",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(text_pair=pb.TextPair(text="a", text_pair=""))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].text_pair.text_pair is empty",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(tokens=pb.TokenIds(ids=[2, 99999, 3]))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].tokens.ids[1] = 99999 is outside the vocabulary",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(tokens=pb.TokenIds(ids=[2, 3], attention_mask=[1]))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].tokens.attention_mask has 1 values; ids has 2",
    ),
    (
        dict(model="tiny", inputs=[pb.Input(tokens=pb.TokenIds(ids=[2] * 65))]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "inputs[0].tokens.ids has 65 tokens; this model takes at most 64",
    ),
    (
        dict(model="../etc", inputs=[pb.Input(text="x")]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "model name '../etc' is not valid",
    ),
]


@pytest.mark.parametrize(("request_fields", "code", "message"), BAD_REQUESTS)
async def test_bad_requests_get_a_clear_status(stub, request_fields, code, message) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Classify(classify(**request_fields))
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert "Traceback" not in caught.value.details()


async def test_unexpected_errors_become_internal_without_details(stub, server, monkeypatch) -> None:
    served = await server.registry.get("tiny")

    def explode(*args: object) -> None:
        raise RuntimeError("secret internal detail /etc/passwd")

    monkeypatch.setattr(served.runtime, "encode", explode)
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Classify(classify(model="tiny", inputs=[pb.Input(text="good")]))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in caught.value.details()
    assert caught.value.details() == "internal error; see the server log"
