"""What a fine-tuning job is asked to do, as data stored with the job."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class JobState(StrEnum):
    """Lifecycle of a job; the last three are final."""

    VALIDATING = "validating"
    QUEUED = "queued"
    RUNNING = "running"
    EXPORTING = "exporting"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        """True for succeeded, failed and cancelled."""
        return self in FINAL_STATES


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.RUNNING, JobState.EXPORTING})


class Hyperparameters(BaseModel):
    """Training settings, with the defaults a request's zero values fall back to."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=3, ge=1, le=100)
    learning_rate: float = Field(default=5e-5, gt=0, le=1)
    batch_size: int = Field(default=16, ge=1, le=1024)
    max_length: int = Field(default=128, ge=8, le=8192)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    weight_decay: float = Field(default=0.01, ge=0, lt=1)
    seed: int = Field(default=42, ge=0)
    early_stopping_patience: int = Field(default=2, ge=1, le=100)


class JobSpec(BaseModel):
    """Everything CreateJob asked for, validated; stored as JSON with the job."""

    model_config = ConfigDict(extra="forbid")

    task: str
    base_path: str = ""
    base_model: str = ""
    base_version: str = ""
    dataset_id: str
    validation_dataset_id: str = ""
    validation_split: float = Field(default=0.2, gt=0, le=0.5)
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    model_name: str
    auto_promote: bool = False
    idempotency_key: str = ""

    @property
    def base_label(self) -> str:
        """Where training starts from, for people: a folder or "name:version"."""
        if self.base_model:
            return f"{self.base_model}:{self.base_version or 'latest'}"
        return self.base_path
