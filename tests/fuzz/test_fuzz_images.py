"""Property-based fuzzing of image inputs over real gRPC: Classify on a tiny ViT gets real
PNG, JPEG, GIF and BMP files with bytes changed and cut short, and random bytes.

Each call must end OK or INVALID_ARGUMENT naming the input (never INTERNAL or UNKNOWN);
an answer ranks both labels with finite scores; and after every example the server still
classifies a good request (with the text model beside the ViT).
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path

import grpc
import numpy as np
import pytest
from fuzzing import CALL_TIMEOUT_S, FUZZ, assert_still_serving, outcome
from grpc import aio
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PILImage

from edgetune.plugins.manager import Plugins
from edgetune.store import ModelRepository
from edgetune.v1 import inference_pb2 as ipb
from edgetune.v1 import inference_pb2_grpc


@pytest.fixture(scope="module")
def tiny_vit_models(
    tmp_path_factory: pytest.TempPathFactory, plugins: Plugins, tiny_vit: Path
) -> Path:
    """A repository holding the tiny ViT (32x32 images) as model "vit"."""
    from edgetune.exporters.onnx import import_model

    root = tmp_path_factory.mktemp("vit-models") / "models"
    import_model(ModelRepository(root), plugins.task("image-classification"), "vit", tiny_vit)
    return root


@pytest.fixture
def vit_in_home(home: Path, tiny_vit_models: Path) -> None:
    """The ViT copied into this test's home before its server starts."""
    shutil.copytree(tiny_vit_models / "vit", home / "models" / "vit")


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    noise = np.random.default_rng(0).integers(0, 255, (24, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(noise).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


SEED_IMAGES = [
    encoded("PNG"),
    encoded("PNG", "L"),
    encoded("PNG", "RGBA"),
    encoded("PNG", "P"),
    encoded("JPEG"),
    encoded("JPEG", "L"),
    encoded("GIF"),
    encoded("BMP"),
]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A real image with a few bytes changed, maybe cut short: into the decoders more often
    than random bytes get."""
    data = bytearray(draw(st.sampled_from(SEED_IMAGES)))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2, 3]))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    end = draw(st.just(len(data)) | st.integers(0, len(data)))
    return bytes(data[:end])


@FUZZ
@given(data=st.lists(mutated_images() | st.binary(max_size=64), min_size=1, max_size=3))
async def test_classify_answers_any_image_bytes_with_a_status(
    vit_in_home: None, channel: aio.Channel, data: list[bytes]
) -> None:
    stub = inference_pb2_grpc.InferenceStub(channel)
    request = ipb.ClassifyRequest(model="vit", inputs=[ipb.Input(image=d) for d in data])
    code, reply = await outcome(stub.Classify(request, timeout=CALL_TIMEOUT_S))
    if code == grpc.StatusCode.OK:
        assert reply is not None and len(reply.results) == len(data)
        for result in reply.results:
            assert sorted(s.label for s in result.labels) == ["a", "b"]
            assert all(math.isfinite(s.score) for s in result.labels)
    else:
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    await assert_still_serving(channel)
