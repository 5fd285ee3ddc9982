"""Built-in task: single-label image classification (ViT-style models).

Data-set rows carry the image itself, `{"image": "<base64 of PNG or JPEG bytes>", "label":
...}` (a `data:image/...;base64,` prefix is accepted), never a file path or URL: rows come
from clients, and the server must not read files or fetch URLs on their behalf.

Training preprocesses with the base model's transformers image processor; serving
reproduces it in numpy and Pillow from the `preprocessor_config.json` exported beside the
model (resize, optional centre crop, rescale, normalise), so serving imports no torch or
transformers. Only processors whose arithmetic is reproduced exactly are accepted
(`SUPPORTED_PROCESSORS`); any other fails when the model is built, not when it serves.
"""

from __future__ import annotations

import binascii
import io
import json
from base64 import b64decode
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from PIL import ImageOps
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.kit import LabelIds, classification_metrics, single_label
from edgetune.plugins import hookimpl
from edgetune.task import (
    Array,
    Collator,
    Encoded,
    Feature,
    Image,
    Input,
    ModelFiles,
    Preprocessor,
    Result,
    Task,
    TaskRuntime,
    TrainableModel,
    label_head,
    single_label_results,
)


class ImageSettings(BaseSettings):
    """The image task's own settings: EDGETUNE_* environment variables like the server's,
    owned here because no other task reads them."""

    model_config = SettingsConfigDict(env_prefix="EDGETUNE_", extra="ignore")

    max_image_pixels: int = Field(default=50_000_000, ge=1)
    """Most pixels (width x height, read from the header before decoding) in one image
    input; larger images are refused, not decoded."""


MAX_IMAGE_PIXELS: int = ImageSettings.model_fields["max_image_pixels"].default
"""Most pixels (width x height) in one image, checked from the header before decoding, so
a small file that expands to gigabytes (a decompression bomb) is refused cheaply. Serving
uses `EDGETUNE_MAX_IMAGE_PIXELS` (`ImageSettings`); this default applies elsewhere."""


def max_image_pixels() -> int:
    """The pixel limit `EDGETUNE_MAX_IMAGE_PIXELS` sets, read when a model loads (so a
    changed environment applies to the next load).

    :raises ModelLoadError: the variable is not a whole number of at least 1.
    """
    try:
        return ImageSettings().max_image_pixels
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        raise ModelLoadError(f"EDGETUNE_MAX_IMAGE_PIXELS: {problem}") from None


class ImageProcessor(Preprocessor, Protocol):
    """A transformers image processor, as this task uses it."""

    def to_json_string(self) -> str:
        """The processor's configuration (its preprocessor_config.json)."""


IMAGE_FORMATS = ("PNG", "JPEG")
"""The decoders Pillow may use; others are never tried on untrusted bytes."""

SUPPORTED_PROCESSORS = ("ViTImageProcessor", "DeiTImageProcessor")
"""Image processors whose preprocessing serving reproduces exactly."""

PROCESSOR_FILE = "preprocessor_config.json"
INPUT_NAME = "pixel_values"


def decode_image(data: bytes, field: str, max_pixels: int = MAX_IMAGE_PIXELS) -> PILImage.Image:
    """An RGB image from PNG or JPEG bytes, EXIF orientation applied (as transformers'
    `load_image` does).

    :param field: how errors name the value, e.g. "inputs[0].image".
    :raises InvalidArgument: empty, not PNG/JPEG, over MAX_IMAGE_PIXELS, or corrupt.
    """
    if not data:
        raise InvalidArgument(f"{field} is empty")
    try:
        image = PILImage.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except PILImage.DecompressionBombError:
        raise InvalidArgument(f"{field} has over {max_pixels} pixels") from None
    except Exception:
        raise InvalidArgument(f"{field} is not a PNG or JPEG image") from None
    width, height = image.size
    if width * height > max_pixels:
        raise InvalidArgument(
            f"{field} is {width}x{height} pixels ({width * height}); the limit is {max_pixels}"
        )
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image if image.mode == "RGB" else image.convert("RGB")
    except Exception as exc:  # whatever a decoder raises on corrupt data is the client's
        raise InvalidArgument(f"{field} cannot be decoded: {exc}") from None


def image_bytes(value: Any, field: str) -> bytes:
    """The image bytes of a data-set value: base64, optionally as a `data:` URL."""
    if value is None:
        raise InvalidArgument(f"{field} is missing")
    if not isinstance(value, str):
        raise InvalidArgument(f"{field} must be a base64 string of PNG or JPEG bytes")
    text = value.strip()
    if text.startswith("data:"):
        header, _, text = text.partition(",")
        if not header.endswith(";base64"):
            raise InvalidArgument(f"{field} is a data URL that is not base64")
    if not text:
        raise InvalidArgument(f"{field} is empty")
    try:
        return b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            f"{field} is not valid base64 (it must hold the PNG or JPEG bytes themselves; "
            "file paths and URLs are not read)"
        ) from None


# ---- preprocessing, reproduced in numpy ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImagePreprocessing:
    """What a supported image processor does to one RGB image, from its saved config."""

    size: tuple[int, int]
    """(height, width) the image is resized to."""
    resample: PILImage.Resampling
    crop: tuple[int, int] | None
    """(height, width) of the centre crop after resizing, if any."""
    rescale_factor: float | None
    mean: npt.NDArray[np.float32] | None
    std: npt.NDArray[np.float32] | None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ImagePreprocessing:
        """Parse a `preprocessor_config.json`; ValueError says what is not supported."""
        kind = config.get("image_processor_type")
        if kind not in SUPPORTED_PROCESSORS:
            raise ValueError(
                f"image processor {kind!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_PROCESSORS)})"
            )
        if not config.get("do_resize", True):
            raise ValueError("do_resize is false: serving needs a fixed image size")
        crop = _size(config.get("crop_size"), "crop_size") if config.get("do_center_crop") else None
        size = _size(config.get("size"), "size")
        if crop is not None and (crop[0] > size[0] or crop[1] > size[1]):
            raise ValueError(f"crop_size {crop} is larger than size {size}")
        mean = std = None
        if config.get("do_normalize", True):
            mean = _per_channel(config.get("image_mean"), "image_mean")
            std = _per_channel(config.get("image_std"), "image_std")
        return cls(
            size=size,
            resample=PILImage.Resampling(int(config.get("resample", PILImage.Resampling.BILINEAR))),
            crop=crop,
            rescale_factor=float(config.get("rescale_factor", 1 / 255))
            if config.get("do_rescale", True)
            else None,
            mean=mean,
            std=std,
        )

    @property
    def output_size(self) -> tuple[int, int]:
        """(height, width) of the model input."""
        return self.crop or self.size

    def pixels(self, image: PILImage.Image) -> npt.NDArray[np.uint8]:
        """Resize (with Pillow, as transformers does) and crop: height x width x 3 uint8."""
        height, width = self.size
        array = np.asarray(image.resize((width, height), resample=self.resample))
        if self.crop is not None:
            top, left = (height - self.crop[0]) // 2, (width - self.crop[1]) // 2
            array = array[top : top + self.crop[0], left : left + self.crop[1]]
        return array

    def normalize(self, batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """N x H x W x 3 uint8 -> N x 3 x H x W float32, with transformers' float steps
        (rescale in float64 then float32, normalise in float32) so values match exactly."""
        if self.rescale_factor is not None:
            values = (batch.astype(np.float64) * self.rescale_factor).astype(np.float32)
        else:
            values = batch.astype(np.float32)
        if self.mean is not None and self.std is not None:
            values = (values - self.mean) / self.std
        return np.ascontiguousarray(values.transpose(0, 3, 1, 2))


def _size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, int):
        value = {"height": value, "width": value}
    if not isinstance(value, Mapping) or set(value) != {"height", "width"}:
        raise ValueError(f"{name} {value!r} is not supported: it must be {{height, width}}")
    height, width = int(value["height"]), int(value["width"])
    if height < 1 or width < 1:
        raise ValueError(f"{name} {value!r} must be positive")
    return height, width


def _per_channel(value: Any, name: str) -> npt.NDArray[np.float32]:
    values = [value] * 3 if isinstance(value, int | float) else value
    if not isinstance(values, list) or len(values) != 3:
        raise ValueError(f"{name} {value!r} must be one number or three")
    return np.asarray(values, dtype=np.float32)


def _preprocessing(processor: Preprocessor) -> ImagePreprocessing:
    """The serving preprocessing of a transformers image processor; InvalidArgument when
    serving could not reproduce it."""
    # What load_preprocessor returned, handed back by the core: an image processor.
    config = cast(ImageProcessor, processor).to_json_string()
    try:
        return ImagePreprocessing.from_config(json.loads(config))
    except ValueError as exc:
        raise InvalidArgument(f"base model: {exc}") from None


# ---- serving -----------------------------------------------------------------------------


class ImageClassificationRuntime(TaskRuntime):
    """Decode, resize and normalise each image; softmax and top-k on the way out."""

    def __init__(self, model: ModelFiles) -> None:
        path = model.path / PROCESSOR_FILE
        try:
            self.preprocessing = ImagePreprocessing.from_config(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path}: {exc}") from None
        if INPUT_NAME not in model.input_names:
            raise ModelLoadError(
                f"{model.path}: the ONNX model takes {', '.join(model.input_names)}, "
                f"not {INPUT_NAME}"
            )
        self.labels = model.manifest.labels
        self.max_pixels = max_image_pixels()

    def encode(self, inputs: Sequence[Input]) -> Encoded:
        """One N x 3 x H x W float32 batch; a bad image is refused naming `inputs[i].image`."""
        height, width = self.preprocessing.output_size
        batch = np.empty((len(inputs), height, width, 3), dtype=np.uint8)
        for index, item in enumerate(inputs):
            if not isinstance(item, Image):
                raise InvalidArgument(f"inputs[{index}]: this model takes image input")
            image = decode_image(item.data, f"inputs[{index}].image", self.max_pixels)
            batch[index] = self.preprocessing.pixels(image)
        return Encoded({INPUT_NAME: self.preprocessing.normalize(batch)})

    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """Softmax over the logits; the best label is `selected`."""
        return single_label_results(outputs[0], self.labels, top_k)


# ---- the task ----------------------------------------------------------------------------


class ImageClassification(Task):
    """Single-label classification of a PNG or JPEG image."""

    name = "image-classification"
    description = "Single-label classification of a PNG or JPEG image (softmax over labels)."
    input_kinds = (Image,)
    optimum_task = "image-classification"

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`image` must be base64 of a PNG or JPEG that decodes; `label` one value."""
        field = f"row {row}: field 'image'"
        decode_image(image_bytes(example.get("image"), field), field)
        return [single_label(example, row)]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """The decoded image bytes."""
        return Image(image_bytes(example.get("image"), "field 'image'"))

    def build_model(self, base: Path, labels: Sequence[str]) -> TrainableModel:
        """AutoModelForImageClassification with a fresh head when the label set differs."""
        from transformers import AutoModelForImageClassification

        model: TrainableModel = AutoModelForImageClassification.from_pretrained(
            base, **label_head(labels)
        )
        return model

    def load_preprocessor(self, base: Path) -> Preprocessor:
        """The base model's (slow, Pillow-based) image processor, which serving reproduces;
        InvalidArgument for one it cannot."""
        from transformers import AutoImageProcessor

        processor: ImageProcessor = AutoImageProcessor.from_pretrained(base, use_fast=False)  # type: ignore[no-untyped-call]
        _preprocessing(processor)
        return processor

    def build_features(
        self,
        examples: Sequence[Mapping[str, Any]],
        preprocessor: Preprocessor,
        labels: Sequence[str],
        max_length: int,
    ) -> list[Feature]:
        """The image bytes and label id of each example. Pixels are made per batch by
        `collate`: decoded images are far larger than the files, so a data set of photos
        would not fit in memory as pixel arrays."""
        ids = LabelIds(labels)
        features = []
        for row, example in enumerate(examples, start=1):
            label = ids(single_label(example, row), row)  # example_labels checked the image
            data = image_bytes(example.get("image"), f"row {row}: field 'image'")
            features.append({"image": data, "labels": label})
        return features

    def collate(self, preprocessor: Preprocessor) -> Collator:
        """Decodes a batch of images and runs the image processor: pixel_values, labels."""
        import torch

        def collate_images(features: list[Feature]) -> dict[str, Any]:
            images = [decode_image(f["image"], "field 'image'") for f in features]
            pixels = preprocessor(images=images, return_tensors="pt")["pixel_values"]
            labels = torch.tensor([f["labels"] for f in features], dtype=torch.long)
            return {INPUT_NAME: pixels, "labels": labels}

        return collate_images

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Accuracy, macro precision / recall / F1, per-label F1 and the confusion matrix."""
        return classification_metrics(np.asarray(logits).argmax(axis=-1), label_ids, labels)

    def task_options(
        self, model: TrainableModel, preprocessor: Preprocessor, max_length: int | None = None
    ) -> dict[str, Any]:
        """The input image size, after checking that it is the size the model was built
        for (a ViT's position embeddings fix it)."""
        height, width = _preprocessing(preprocessor).output_size
        expected = getattr(model.config, "image_size", None)
        if expected is not None:
            expected = (expected, expected) if isinstance(expected, int) else tuple(expected)
            if expected != (height, width):
                raise InvalidArgument(
                    f"base model: the image processor makes {height}x{width} images, "
                    f"the model takes {expected[0]}x{expected[1]}"
                )
        return {"image_size": [height, width]}

    def runtime(self, model: ModelFiles) -> TaskRuntime:
        """A runtime bound to this version's preprocessing and labels."""
        return ImageClassificationRuntime(model)

    def warmup_inputs(self) -> list[Input]:
        """A small grey PNG (resized up to the model's size like any input)."""
        buffer = io.BytesIO()
        PILImage.new("RGB", (8, 8), (128, 128, 128)).save(buffer, format="PNG")
        return [Image(buffer.getvalue())]


@hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the image-classification task."""
    register(ImageClassification())
