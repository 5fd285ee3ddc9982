"""One oversized request must not stall everyone: requests with millions of inputs (a
16 MB Classify, a v2 ModelInfer with millions of BYTES elements) are refused by their count
before any element is converted, while a probe client keeps getting answers.

Nothing here asserts a time: the probe must succeed on every call made while the big
requests are refused, and each big request must get INVALID_ARGUMENT naming the count.
"""

from __future__ import annotations

import asyncio

import grpc
from grpc import aio

from edgetune.kserve import grpc_predict_v2_pb2 as v2
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc

ELEMENTS = 1_000_000


def huge_classify() -> bytes:
    """A ClassifyRequest (16 MB at 3.3 M inputs, the limit of a message) with ELEMENTS one-letter inputs, built as bytes (repeated fields
    concatenate on the wire), as a hostile client would send it."""
    head = ipb.ClassifyRequest(model="tiny").SerializeToString()
    one = ipb.ClassifyRequest(inputs=[ipb.Input(text="a")]).SerializeToString()
    return head + one * ELEMENTS


def huge_infer(shape: int) -> v2.ModelInferRequest:
    """ELEMENTS empty BYTES elements in raw contents (4 zero bytes each)."""
    return v2.ModelInferRequest(
        model_name="tiny",
        inputs=[
            v2.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[shape])
        ],
        raw_input_contents=[b"\0\0\0\0" * ELEMENTS],
    )


async def test_oversized_requests_are_refused_by_count_while_a_probe_keeps_answering(
    channel: aio.Channel, monkeypatch
) -> None:
    # Count the inputs the server converts: a refusal by count converts none of the flood.
    from edgetune.server import convert

    converted = 0

    class CountedText(convert.Text):
        def __init__(self, *args, **kwargs) -> None:
            nonlocal converted
            converted += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(convert, "Text", CountedText)
    stub = inference_pb2_grpc.InferenceStub(channel)
    infer = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    raw_classify = channel.unary_unary(
        "/edgetune.v1.Inference/Classify",
        request_serializer=None,
        response_deserializer=ipb.ClassifyResponse.FromString,
    )
    probe = ipb.ClassifyRequest(model="tiny", inputs=[ipb.Input(text="good fun")])
    await stub.Classify(probe)  # loaded and warm before the flood
    big = huge_classify()
    attacks_done = asyncio.Event()
    answered = 0

    async def probing() -> None:
        nonlocal answered
        while not attacks_done.is_set():
            reply = await stub.Classify(probe, timeout=30)
            assert reply.results
            answered += 1

    async def attacks() -> list[aio.AioRpcError]:
        refused = []
        try:
            for call in (
                lambda: raw_classify(big, timeout=60),
                lambda: infer.ModelInfer(huge_infer(ELEMENTS), timeout=60),
                lambda: infer.ModelInfer(huge_infer(1), timeout=60),  # shape lies
                lambda: raw_classify(big, timeout=60),
            ):
                try:
                    await call()
                except aio.AioRpcError as exc:
                    refused.append(exc)
        finally:
            attacks_done.set()
        return refused

    probe_task = asyncio.create_task(probing())
    refused = await attacks()
    await probe_task
    assert len(refused) == 4
    assert all(e.code() == grpc.StatusCode.INVALID_ARGUMENT for e in refused), refused
    assert f"inputs has {ELEMENTS} items; the limit is 8" in refused[0].details()
    assert f"shape[0] has {ELEMENTS} items; the limit is 8" in refused[1].details()
    assert "shape [1] needs 1 elements, got 2" in refused[2].details()
    assert converted <= answered + 1  # only the probes' inputs were converted
    assert answered >= 1  # the probe was answered while the server refused the flood
    assert (await stub.Classify(probe)).results  # and the server still serves
