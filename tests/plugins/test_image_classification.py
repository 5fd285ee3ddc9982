"""The built-in image-classification task: its rows, its numpy preprocessing (against the
transformers image processors it reproduces) and, end to end over gRPC, training a tiny
ViT on scikit-learn's bundled handwritten digits and classifying held-out ones."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc import aio
from PIL import Image as PILImage

from edgetune.conformance import TaskConformance, build_tiny_vit
from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.plugins.image_classification import (
    MAX_IMAGE_PIXELS,
    ImageClassification,
    decode_image,
)
from edgetune.store import ModelRepository
from edgetune.store.manifest import Manifest
from edgetune.task import Image, ModelFiles
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc, inference_pb2_grpc
from edgetune.v1 import inference_pb2 as ipb

task = ImageClassification()
DIGITS = [str(d) for d in range(10)]
TRAIN_ROWS = 1400  # of the 1797 bundled digits; the rest are held out for Classify


def encoded(image: PILImage.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def digit_image(pixels: np.ndarray) -> PILImage.Image:
    """An 8x8 digit (values 0..16) as a 32x32 greyscale image."""
    small = PILImage.fromarray((pixels * 255 / 16).astype(np.uint8), "L")
    return small.resize((32, 32), PILImage.Resampling.BILINEAR)


@cache
def digits() -> tuple[list[bytes], list[str]]:
    """The bundled digits (no download: the data ships in the scikit-learn wheel) as PNGs."""
    from sklearn.datasets import load_digits

    data = load_digits()
    return [encoded(digit_image(x)) for x in data.images], [str(y) for y in data.target]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def noise_image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    return PILImage.fromarray(array.squeeze(-1) if channels == 1 else array, mode)


def png_claiming(width: int, height: int) -> bytes:
    """A few bytes of PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


GOOD_PNG = encoded(noise_image(20, 12))
TRUNCATED_PNG = encoded(noise_image(64, 64))[:2000]
GIF = encoded(noise_image(8, 8), "GIF")

# ---- rows ------------------------------------------------------------------------------


def test_example_labels_accepts_base64_and_data_urls() -> None:
    assert task.example_labels({"image": b64(GOOD_PNG), "label": "cat"}, 1) == ["cat"]
    data_url = "data:image/png;base64," + b64(GOOD_PNG)
    assert task.example_labels({"image": data_url, "label": 7}, 1) == ["7"]
    wrapped = base64.encodebytes(GOOD_PNG).decode()  # MIME base64, with newlines
    assert task.example_labels({"image": wrapped, "label": "cat"}, 1) == ["cat"]
    assert task.example_input({"image": data_url}) == Image(GOOD_PNG)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"label": "cat"}, "row 3: field 'image' is missing"),
        ({"image": 5, "label": "cat"}, "row 3: field 'image' must be a base64 string"),
        ({"image": "  ", "label": "cat"}, "row 3: field 'image' is empty"),
        (
            {"image": "/home/me/cat.png", "label": "cat"},
            "row 3: field 'image' is not valid base64 (it must hold the PNG or JPEG bytes "
            "themselves; file paths and URLs are not read)",
        ),
        ({"image": "https://example.com/cat.png", "label": "cat"}, "is not valid base64"),
        (
            {"image": "data:image/png," + b64(GOOD_PNG), "label": "cat"},
            "row 3: field 'image' is a data URL that is not base64",
        ),
        (
            {"image": b64(b"plain text"), "label": "cat"},
            "row 3: field 'image' is not a PNG or JPEG image",
        ),
        ({"image": b64(GIF), "label": "cat"}, "row 3: field 'image' is not a PNG or JPEG image"),
        (
            {"image": b64(TRUNCATED_PNG), "label": "cat"},
            "row 3: field 'image' cannot be decoded",
        ),
        (
            {"image": b64(png_claiming(8000, 8000)), "label": "cat"},
            f"row 3: field 'image' is 8000x8000 pixels (64000000); the limit is {MAX_IMAGE_PIXELS}",
        ),
        (  # past Pillow's own bomb limit, which refuses it while reading the header
            {"image": b64(png_claiming(20000, 20000)), "label": "cat"},
            f"row 3: field 'image' has over {MAX_IMAGE_PIXELS} pixels",
        ),
        ({"image": b64(GOOD_PNG)}, "row 3: field 'label' is missing"),
        ({"image": b64(GOOD_PNG), "label": ["a"]}, "row 3: field 'label' must be one value"),
    ],
)
def test_bad_rows_are_named(row: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        task.example_labels(row, 3)
    assert message in caught.value.message


def test_decode_image_converts_to_rgb_and_applies_exif_orientation() -> None:
    for mode in ("L", "RGBA"):
        image = decode_image(encoded(noise_image(5, 3, mode)), "x")
        assert (image.mode, image.size) == ("RGB", (5, 3))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    noise_image(10, 4).save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), "x").size == (4, 10)


# ---- preprocessing: serving's numpy against the transformers processors -------------


def runtime_for(folder: Path, processor: Any) -> Any:
    processor.save_pretrained(folder)
    files = ModelFiles(folder, Manifest(task=task.name, labels=DIGITS), ("pixel_values",), ())
    return task.runtime(files)


def processors() -> list[Any]:
    from transformers import DeiTImageProcessor, ViTImageProcessor

    return [
        ViTImageProcessor(size={"height": 32, "width": 32}),
        ViTImageProcessor(
            size={"height": 24, "width": 40},
            resample=PILImage.Resampling.BICUBIC,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ),
        ViTImageProcessor(size={"height": 16, "width": 16}, do_normalize=False),
        DeiTImageProcessor(size={"height": 41, "width": 37}, crop_size={"height": 32, "width": 30}),
    ]


@pytest.mark.parametrize(
    "index", range(4), ids=["vit", "vit-bicubic-imagenet", "vit-raw", "deit-crop"]
)
def test_serving_pixels_equal_the_transformers_processor(tmp_path: Path, index: int) -> None:
    processor = processors()[index]
    runtime = runtime_for(tmp_path, processor)
    images = [
        encoded(noise_image(50, 37, seed=1)),
        encoded(noise_image(7, 90, "L", seed=2)),
        encoded(noise_image(33, 33, "RGBA", seed=3)),
        encoded(noise_image(64, 48, seed=4), "JPEG"),
    ]
    ours = runtime.encode([Image(data) for data in images]).feeds["pixel_values"]
    theirs = processor(images=[decode_image(data, "x") for data in images], return_tensors="np")[
        "pixel_values"
    ]
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_an_unsupported_processor_is_refused(tmp_path: Path) -> None:
    from transformers import ConvNextImageProcessor, ViTImageProcessor

    ConvNextImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(InvalidArgument, match="'ConvNextImageProcessor' is not supported"):
        task.load_preprocessor(tmp_path)
    files = ModelFiles(tmp_path, Manifest(task=task.name, labels=DIGITS), ("pixel_values",), ())
    with pytest.raises(ModelLoadError, match="ConvNextImageProcessor"):
        task.runtime(files)
    (tmp_path / "preprocessor_config.json").unlink()
    with pytest.raises(ModelLoadError, match=r"preprocessor_config\.json"):
        task.runtime(files)
    ViTImageProcessor().save_pretrained(tmp_path)
    other = ModelFiles(tmp_path, Manifest(task=task.name, labels=DIGITS), ("input_ids",), ())
    with pytest.raises(ModelLoadError, match="takes input_ids, not pixel_values"):
        task.runtime(other)


def test_build_model_features_collate_and_options(tiny_vit: Path, tmp_path: Path) -> None:
    from transformers import ViTImageProcessor

    processor = task.load_preprocessor(tiny_vit)
    model = task.build_model(tiny_vit, ["cat", "dog", "owl"])
    assert model.config.id2label == {0: "cat", 1: "dog", 2: "owl"}
    assert model.classifier.out_features == 3
    rows = [
        {"image": b64(GOOD_PNG), "label": "dog"},
        {"image": b64(encoded(noise_image(9, 9, "L"), "JPEG")), "label": "cat"},
    ]
    features = task.build_features(rows, processor, ["cat", "dog", "owl"], max_length=16)
    assert [f["labels"] for f in features] == [1, 0]
    batch = task.collate(processor)(features)
    assert tuple(batch["pixel_values"].shape) == (2, 3, 32, 32)
    assert batch["labels"].tolist() == [1, 0]
    assert model(**batch).logits.shape == (2, 3)
    assert task.task_options(model, processor) == {"image_size": [32, 32]}
    ViTImageProcessor(size={"height": 48, "width": 48}).save_pretrained(tmp_path)
    with pytest.raises(InvalidArgument, match="makes 48x48 images, the model takes 32x32"):
        task.task_options(model, task.load_preprocessor(tmp_path))
    with pytest.raises(InvalidArgument, match="row 2: label 'cat' is not one of the training"):
        task.build_features(rows, processor, ["dog", "owl"], max_length=16)


# ---- over gRPC ---------------------------------------------------------------------------


async def upload(stub: Any, data: bytes, task_name: str = task.name) -> pb.Dataset:
    async def messages() -> Any:
        yield pb.UploadDatasetRequest(
            header=pb.DatasetHeader(filename="images.jsonl", task=task_name)
        )
        for start in range(0, len(data), 65536):
            yield pb.UploadDatasetRequest(chunk=data[start : start + 65536])

    return await stub.UploadDataset(messages())


def jsonl(rows: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


async def test_train_on_digits_then_classify_held_out_images(
    channel: aio.Channel, tiny_vit: Path
) -> None:
    images, targets = digits()
    finetuning = finetuning_pb2_grpc.FineTuningStub(channel)
    rows = [{"image": b64(x), "label": y} for x, y in zip(images, targets, strict=True)]
    dataset = await upload(finetuning, jsonl(rows[:TRAIN_ROWS]))
    assert dataset.rows == TRAIN_ROWS and set(dataset.label_counts) == set(DIGITS)

    job = await finetuning.CreateJob(
        pb.CreateJobRequest(
            task=task.name,
            base_path=str(tiny_vit),
            dataset_id=dataset.id,
            validation_split=0.15,
            model_name="digits",
            hyperparameters=pb.Hyperparameters(
                epochs=12, learning_rate=3e-3, batch_size=32, early_stopping_patience=12
            ),
            auto_promote=True,
        )
    )
    events = [e async for e in finetuning.WatchJob(pb.WatchJobRequest(id=job.id), timeout=240)]
    final = await finetuning.GetJob(pb.GetJobRequest(id=job.id))
    assert final.state == pb.JOB_STATE_SUCCEEDED, (final.error, [e.message for e in events])
    assert final.result.format in ("onnx-int8", "onnx-fp32") and final.result.gate
    # The exported model, fed by serving's numpy preprocessing, scores as the best torch
    # checkpoint did (an example or two of the 210 may flip on float rounding).
    assert abs(final.result.fp32_metrics["accuracy"] - final.metrics["accuracy"]) <= 0.02

    inference = inference_pb2_grpc.InferenceStub(channel)

    async def accuracy(held_out: list[bytes], expected: list[str]) -> float:
        correct = 0
        for start in range(0, len(held_out), 8):  # the test server takes 8 inputs a call
            reply = await inference.Classify(
                ipb.ClassifyRequest(
                    model="digits",
                    inputs=[ipb.Input(image=x) for x in held_out[start : start + 8]],
                    top_k=1,
                )
            )
            best = [r.labels[0].label for r in reply.results]
            correct += sum(b == e for b, e in zip(best, expected[start : start + 8], strict=True))
        return correct / len(held_out)

    held_out, expected = images[TRAIN_ROWS:], targets[TRAIN_ROWS:]
    assert await accuracy(held_out, expected) >= 0.5  # chance is 0.1
    # The same digits as colour JPEGs: another decoder, three channels, lossy pixels.
    jpegs = [encoded(PILImage.open(io.BytesIO(x)).convert("RGB"), "JPEG") for x in held_out[:80]]
    assert await accuracy(jpegs, expected[:80]) >= 0.5

    reply = await inference.Classify(
        ipb.ClassifyRequest(model="digits", inputs=[ipb.Input(image=held_out[0])])
    )
    labels = reply.results[0].labels
    assert sorted(s.label for s in labels) == DIGITS
    assert [s.selected for s in labels] == [True] + [False] * 9
    assert sum(s.score for s in labels) == pytest.approx(1.0, abs=1e-4)


BAD_IMAGES = [
    (b"", "inputs[1].image is empty"),
    (b"not an image", "inputs[1].image is not a PNG or JPEG image"),
    (GIF, "inputs[1].image is not a PNG or JPEG image"),
    (TRUNCATED_PNG, "inputs[1].image cannot be decoded"),
    (png_claiming(8000, 8000), "inputs[1].image is 8000x8000 pixels (64000000); the limit is"),
]


async def test_bad_inputs_are_refused_naming_the_input(
    channel: aio.Channel, repository: ModelRepository, tiny_vit: Path, plugins: Any
) -> None:
    from edgetune.exporters.onnx import import_model

    import_model(repository, plugins.task(task.name), "vit", tiny_vit)
    inference = inference_pb2_grpc.InferenceStub(channel)
    good = await inference.Classify(
        ipb.ClassifyRequest(model="vit", inputs=[ipb.Input(image=GOOD_PNG)])
    )
    assert sorted(s.label for s in good.results[0].labels) == ["a", "b"]
    for image, message in BAD_IMAGES:
        with pytest.raises(aio.AioRpcError) as caught:
            await inference.Classify(
                ipb.ClassifyRequest(
                    model="vit", inputs=[ipb.Input(image=GOOD_PNG), ipb.Input(image=image)]
                )
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert message in caught.value.details()
    with pytest.raises(aio.AioRpcError) as caught:
        await inference.Classify(ipb.ClassifyRequest(model="vit", inputs=[ipb.Input(text="a cat")]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[0]" in caught.value.details() and "takes image" in caught.value.details()


async def test_kserve_v2_takes_images_as_bytes_tensors(
    channel: aio.Channel, repository: ModelRepository, tiny_vit: Path, plugins: Any
) -> None:
    from edgetune.exporters.onnx import import_model
    from edgetune.kserve import grpc_predict_v2_pb2 as v2
    from edgetune.kserve import grpc_predict_v2_pb2_grpc as v2_grpc

    import_model(repository, plugins.task(task.name), "vit", tiny_vit)
    images = [GOOD_PNG, encoded(noise_image(40, 24), "JPEG")]
    classify = await inference_pb2_grpc.InferenceStub(channel).Classify(
        ipb.ClassifyRequest(model="vit", inputs=[ipb.Input(image=x) for x in images])
    )
    stub = v2_grpc.GRPCInferenceServiceStub(channel)
    metadata = await stub.ModelMetadata(v2.ModelMetadataRequest(name="vit"))
    assert [(t.name, t.datatype) for t in metadata.inputs] == [("image", "BYTES")]
    tensor = v2.ModelInferRequest.InferInputTensor(name="image", datatype="BYTES", shape=[2])
    typed = v2.ModelInferRequest(model_name="vit", inputs=[tensor])
    typed.inputs[0].contents.bytes_contents.extend(images)
    reply = await stub.ModelInfer(typed)
    labels = [x.decode() for x in reply.outputs[0].contents.bytes_contents]
    assert labels == [r.labels[0].label for r in classify.results]
    scores = np.array(reply.outputs[1].contents.fp32_contents).reshape(2, 2)
    for row, result in zip(scores, classify.results, strict=True):
        by_label = {s.label: s.score for s in result.labels}
        np.testing.assert_allclose(row, [by_label["a"], by_label["b"]], atol=1e-6)

    raw = v2.ModelInferRequest(model_name="vit", inputs=[tensor])
    raw.raw_input_contents.append(b"".join(len(x).to_bytes(4, "little") + x for x in images))
    raw_reply = await stub.ModelInfer(raw)
    assert raw_reply.raw_output_contents[1] == scores.astype("<f4").tobytes()

    bad = v2.ModelInferRequest(model_name="vit", inputs=[tensor])
    bad.inputs[0].contents.bytes_contents.extend([GOOD_PNG, b"not an image"])
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.ModelInfer(bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inputs[1].image is not a PNG or JPEG image" in caught.value.details()


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [{"image": b64(GOOD_PNG), "label": "a"}, {"image": "cat.png", "label": "b"}],
            "row 2: field 'image' is not valid base64",
        ),
        (
            [{"image": b64(GOOD_PNG), "label": "a"}, {"image": b64(TRUNCATED_PNG), "label": "b"}],
            "row 2: field 'image' cannot be decoded",
        ),
        (
            [{"image": b64(GOOD_PNG), "label": "a"}, {"image": b64(GOOD_PNG)}],
            "row 2: field 'label' is missing",
        ),
        ([{"text": "a cat", "label": "a"}], "row 1: field 'image' is missing"),
    ],
)
async def test_bad_rows_are_refused_at_upload(
    channel: aio.Channel, rows: list[dict[str, Any]], message: str
) -> None:
    stub = finetuning_pb2_grpc.FineTuningStub(channel)
    with pytest.raises(aio.AioRpcError) as caught:
        await upload(stub, jsonl(rows))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in caught.value.details()


# ---- the plugin conformance kit, as a third-party image task would run it ---------------


def _conformance_rows() -> list[dict[str, str]]:
    images, targets = digits()
    return [{"image": b64(x), "label": y} for x, y in zip(images[:40], targets[:40], strict=True)]


class TestImageClassificationConformance(TaskConformance):
    task_name = task.name
    train_rows = _conformance_rows()
    serving_inputs = (
        ipb.Input(image=base64.b64decode(train_rows[0]["image"])),
        ipb.Input(image=encoded(noise_image(40, 30), "JPEG")),
    )
    bad_rows = (
        ({"image": "cat.png", "label": "a"}, "field 'image' is not valid base64"),
        ({"image": b64(TRUNCATED_PNG), "label": "a"}, "field 'image' cannot be decoded"),
        ({"image": b64(GOOD_PNG)}, "field 'label' is missing"),
    )
    bad_inputs = ((ipb.Input(image=b"GIF89a"), "inputs[0].image is not a PNG or JPEG image"),)
    hyperparameters = pb.Hyperparameters(epochs=1, learning_rate=3e-3, batch_size=8)

    def build_base(self, folder: Path) -> None:
        build_tiny_vit(folder, DIGITS)


async def test_the_pixel_limit_is_the_plugins_setting(
    settings, plugins, repository, tiny_vit, monkeypatch
) -> None:
    from edgetune.exporters.onnx import import_model
    from edgetune.server.app import start_server

    import_model(repository, plugins.task(task.name), "vit", tiny_vit)
    # The image plugin's own setting, read when the model loads (the server's has none).
    monkeypatch.setenv("EDGETUNE_MAX_IMAGE_PIXELS", "200")  # GOOD_PNG is 20 x 12 = 240 pixels
    running = await start_server(settings, plugins)
    try:
        async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(aio.AioRpcError) as caught:
                await inference_pb2_grpc.InferenceStub(channel).Classify(
                    ipb.ClassifyRequest(model="vit", inputs=[ipb.Input(image=GOOD_PNG)])
                )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert caught.value.details() == ("inputs[0].image is 20x12 pixels (240); the limit is 200")
    finally:
        await running.stop(0)
