"""Per-model serving settings: `<models>/<name>/model-settings.json` overrides the server's
batching and thread settings for one model.

The file sits beside the model's versions, not in a version's manifest: a manifest is
written once and checksummed, while an operator tunes how a model is served without
publishing it again. Every field is optional; what the file leaves out takes the server's
setting. It is read when a version loads, so a change takes effect at the next load
(`edgetune models unload` then `load`, or a restart).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgetune.errors import ModelLoadError

if TYPE_CHECKING:
    from edgetune.settings import Settings

MODEL_SETTINGS_NAME = "model-settings.json"


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """How one loaded model is served: the server's settings with the model's overrides."""

    batch_max_size: int
    batch_max_delay_ms: float
    max_queue_size: int
    inline_max_inputs: int
    intra_op_threads: int
    intra_op_spinning: bool


class ModelOverrides(BaseModel):
    """The contents of a model's model-settings.json; a field left out (or null) keeps the
    server's setting of the same name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_max_size: int | None = Field(default=None, ge=1)
    """Most inputs the batcher puts in one ONNX Runtime call for this model."""
    batch_max_delay_ms: float | None = Field(default=None, ge=0)
    """How long this model, idle, waits for more requests before running a batch."""
    max_queue_size: int | None = Field(default=None, ge=1)
    """Requests that may wait for this model before RESOURCE_EXHAUSTED."""
    inline_max_inputs: int | None = Field(default=None, ge=0)
    """Largest batch of this model run on the event-loop thread when nothing else waits."""
    intra_op_threads: int | None = Field(default=None, ge=0)
    """ONNX Runtime threads per inference call of this model; 0 = physical cores."""
    intra_op_spinning: bool | None = None
    """Let this model's ONNX Runtime threads spin between runs."""

    @classmethod
    def read(cls, model_folder: Path) -> ModelOverrides:
        """The overrides in model_folder/model-settings.json; none when it does not exist.

        :raises ModelLoadError: the file is not JSON, names an unknown field or holds a
            value out of range (the message names the field).
        """
        path = model_folder / MODEL_SETTINGS_NAME
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return cls()
        return cls.parse(data, f"{model_folder.name}/{MODEL_SETTINGS_NAME}")

    @classmethod
    def parse(cls, data: bytes, where: str) -> ModelOverrides:
        """The overrides in data, the contents of the file named where (for messages).

        :raises ModelLoadError: as `read`.
        """
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"]) or "the file"
            raise ModelLoadError(f"{where}: {field}: {first['msg']}") from None

    def applied_to(self, settings: Settings) -> ModelSettings:
        """The model's settings: each override, else the server's value."""

        from edgetune.settings import FIELD_GROUPS

        def pick(name: str) -> object:
            value = getattr(self, name)
            if value is None:
                return getattr(getattr(settings, FIELD_GROUPS[name]), name)
            return value

        return ModelSettings(**{name: pick(name) for name in type(self).model_fields})  # type: ignore[arg-type]
