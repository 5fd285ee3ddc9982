"""Hostile identifiers and tokens: each gets INVALID_ARGUMENT (or NOT_FOUND) naming the
field, with a bounded message — never INTERNAL, never a message so long that the client's
metadata limit turns it into RESOURCE_EXHAUSTED — and one spelling per version number."""

from __future__ import annotations

import grpc
import pytest
from grpc import aio

from edgetune.v1 import finetuning_pb2 as fpb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc, models_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import models_pb2 as mpb

HUGE = "m" * 100_000
INVALID = grpc.StatusCode.INVALID_ARGUMENT


def classify(name: str, version: str = "") -> ipb.ClassifyRequest:
    return ipb.ClassifyRequest(model=name, version=version, inputs=[ipb.Input(text="good")])


CASES = [
    ("Classify", lambda s: s.inference.Classify(classify(HUGE)), INVALID, "model name 'mmmm"),
    (
        "GetModel",
        lambda s: s.models.GetModel(mpb.GetModelRequest(name=HUGE)),
        INVALID,
        "model name",
    ),
    (
        "version 01",
        lambda s: s.inference.Classify(classify("tiny", "01")),
        INVALID,
        "version '01' is not a version number as written by the server: write 1",
    ),
    ("version 001", lambda s: s.inference.Classify(classify("tiny", "001")), INVALID, "write 1"),
    (
        "version ' 1 '",
        lambda s: s.inference.Classify(classify("tiny", " 1 ")),
        INVALID,
        "version or alias ' 1 ' is not valid",
    ),
    (
        "GetJob",
        lambda s: s.finetuning.GetJob(fpb.GetJobRequest(id=HUGE)),
        INVALID,
        "is not a job id",
    ),
    (
        "CancelJob",
        lambda s: s.finetuning.CancelJob(fpb.CancelJobRequest(id=HUGE)),
        INVALID,
        "is not a job id",
    ),
    (
        "ListJobs 20 digits",
        lambda s: s.finetuning.ListJobs(fpb.ListJobsRequest(page_token="9" * 20)),
        INVALID,
        "page_token is not valid",
    ),
    (
        "ListJobs ²",
        lambda s: s.finetuning.ListJobs(fpb.ListJobsRequest(page_token="²")),
        INVALID,
        "page_token is not valid",
    ),
    (
        "ListJobs 5000 digits",
        lambda s: s.finetuning.ListJobs(fpb.ListJobsRequest(page_token="1" * 5000)),
        INVALID,
        "page_token is not valid",
    ),
    (
        "base_path NUL",
        lambda s: s.finetuning.CreateJob(job(base_path="\x00")),
        INVALID,
        "base_path contains a NUL character",
    ),
    (
        "base_path good NUL",
        lambda s: s.finetuning.CreateJob(job(base_path="good\x00/x")),
        INVALID,
        "base_path contains a NUL character",
    ),
    (
        "base_path 5000",
        lambda s: s.finetuning.CreateJob(job(base_path="a" * 5000)),
        INVALID,
        "base_path is longer than 4096 characters",
    ),
    (
        "dataset id",
        lambda s: s.finetuning.CreateJob(
            job(dataset_id="ds_" + "a" * 100_000, base_model=fpb.ModelRef(name="tiny"))
        ),
        grpc.StatusCode.NOT_FOUND,
        "data set 'ds_aaaa",
    ),
]


def job(**fields) -> fpb.CreateJobRequest:
    defaults = {
        "task": "text-classification",
        "model_name": "x",
        "examples": fpb.Examples(examples=[fpb.Example(text="good", label="a")]),
    }
    if "dataset_id" in fields:
        del defaults["examples"]
    return fpb.CreateJobRequest(**{**defaults, **fields})


class Stubs:
    def __init__(self, channel: aio.Channel) -> None:
        self.inference = inference_pb2_grpc.InferenceStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)
        self.finetuning = finetuning_pb2_grpc.FineTuningStub(channel)


@pytest.mark.parametrize(("case", "call", "code", "message"), CASES, ids=[c[0] for c in CASES])
async def test_hostile_identifiers_get_a_bounded_status(channel, case, call, code, message) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(Stubs(channel))
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()
    assert len(caught.value.details()) <= 1000


async def test_watch_after_the_largest_sequence_is_refused(channel) -> None:
    stubs = Stubs(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        async for _ in stubs.finetuning.WatchJob(
            fpb.WatchJobRequest(id="job_x", after_sequence=2**64 - 1)
        ):
            pass
    assert caught.value.code() in (INVALID, grpc.StatusCode.NOT_FOUND)
    # An unknown job may be named first; a known one names the field.
    job_ = await stubs.finetuning.CreateJob(
        job(
            base_model=fpb.ModelRef(name="tiny"),
            model_name="w",
            examples=fpb.Examples(
                examples=[
                    fpb.Example(text=text, label=label)
                    for text, label in [("good", "a"), ("bad", "b")] * 4
                ]
            ),
        )
    )
    try:
        with pytest.raises(aio.AioRpcError) as caught:
            async for _ in stubs.finetuning.WatchJob(
                fpb.WatchJobRequest(id=job_.id, after_sequence=2**64 - 1)
            ):
                pass
        assert caught.value.code() == INVALID
        assert "after_sequence" in caught.value.details()
    finally:
        await stubs.finetuning.CancelJob(fpb.CancelJobRequest(id=job_.id))
