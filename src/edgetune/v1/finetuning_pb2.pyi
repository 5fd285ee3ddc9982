from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_VALIDATING: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_EXPORTING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class TrialState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATE_UNSPECIFIED: _ClassVar[TrialState]
    TRIAL_STATE_COMPLETE: _ClassVar[TrialState]
    TRIAL_STATE_PRUNED: _ClassVar[TrialState]
    TRIAL_STATE_FAILED: _ClassVar[TrialState]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_VALIDATING: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_EXPORTING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState
TRIAL_STATE_UNSPECIFIED: TrialState
TRIAL_STATE_COMPLETE: TrialState
TRIAL_STATE_PRUNED: TrialState
TRIAL_STATE_FAILED: TrialState

class BaseFile(_message.Message):
    __slots__ = ("name", "size_bytes", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    size_bytes: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class BaseHeader(_message.Message):
    __slots__ = ("name", "files")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    name: str
    files: _containers.RepeatedCompositeFieldContainer[BaseFile]
    def __init__(self, name: _Optional[str] = ..., files: _Optional[_Iterable[_Union[BaseFile, _Mapping]]] = ...) -> None: ...

class BaseChunk(_message.Message):
    __slots__ = ("file", "data")
    FILE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file: str
    data: bytes
    def __init__(self, file: _Optional[str] = ..., data: _Optional[bytes] = ...) -> None: ...

class UploadBaseRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: BaseHeader
    chunk: BaseChunk
    def __init__(self, header: _Optional[_Union[BaseHeader, _Mapping]] = ..., chunk: _Optional[_Union[BaseChunk, _Mapping]] = ...) -> None: ...

class Base(_message.Message):
    __slots__ = ("name", "files", "size_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    files: _containers.RepeatedCompositeFieldContainer[BaseFile]
    size_bytes: int
    def __init__(self, name: _Optional[str] = ..., files: _Optional[_Iterable[_Union[BaseFile, _Mapping]]] = ..., size_bytes: _Optional[int] = ...) -> None: ...

class ListBasesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListBasesResponse(_message.Message):
    __slots__ = ("bases",)
    BASES_FIELD_NUMBER: _ClassVar[int]
    bases: _containers.RepeatedCompositeFieldContainer[Base]
    def __init__(self, bases: _Optional[_Iterable[_Union[Base, _Mapping]]] = ...) -> None: ...

class DeleteBaseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class DeleteBaseResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DatasetHeader(_message.Message):
    __slots__ = ("format", "filename", "task")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    format: str
    filename: str
    task: str
    def __init__(self, format: _Optional[str] = ..., filename: _Optional[str] = ..., task: _Optional[str] = ...) -> None: ...

class UploadDatasetRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: DatasetHeader
    chunk: bytes
    def __init__(self, header: _Optional[_Union[DatasetHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ...) -> None: ...

class Dataset(_message.Message):
    __slots__ = ("id", "sha256", "rows", "label_counts", "format", "size_bytes", "task")
    class LabelCountsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    LABEL_COUNTS_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    id: str
    sha256: str
    rows: int
    label_counts: _containers.ScalarMap[str, int]
    format: str
    size_bytes: int
    task: str
    def __init__(self, id: _Optional[str] = ..., sha256: _Optional[str] = ..., rows: _Optional[int] = ..., label_counts: _Optional[_Mapping[str, int]] = ..., format: _Optional[str] = ..., size_bytes: _Optional[int] = ..., task: _Optional[str] = ...) -> None: ...

class Hyperparameters(_message.Message):
    __slots__ = ("epochs", "learning_rate", "batch_size", "max_length", "warmup_ratio", "weight_decay", "seed", "early_stopping_patience")
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_DECAY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    EARLY_STOPPING_PATIENCE_FIELD_NUMBER: _ClassVar[int]
    epochs: int
    learning_rate: float
    batch_size: int
    max_length: int
    warmup_ratio: float
    weight_decay: float
    seed: int
    early_stopping_patience: int
    def __init__(self, epochs: _Optional[int] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., max_length: _Optional[int] = ..., warmup_ratio: _Optional[float] = ..., weight_decay: _Optional[float] = ..., seed: _Optional[int] = ..., early_stopping_patience: _Optional[int] = ...) -> None: ...

class Range(_message.Message):
    __slots__ = ("low", "high", "choices")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    CHOICES_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    choices: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ..., choices: _Optional[_Iterable[float]] = ...) -> None: ...

class Search(_message.Message):
    __slots__ = ("trials", "time_budget_minutes", "metric", "space")
    class SpaceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Range
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Range, _Mapping]] = ...) -> None: ...
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    TIME_BUDGET_MINUTES_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    trials: int
    time_budget_minutes: float
    metric: str
    space: _containers.MessageMap[str, Range]
    def __init__(self, trials: _Optional[int] = ..., time_budget_minutes: _Optional[float] = ..., metric: _Optional[str] = ..., space: _Optional[_Mapping[str, Range]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("number", "state", "hyperparameters", "value", "epochs_run", "best_epoch", "metrics", "seconds", "best")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_RUN_FIELD_NUMBER: _ClassVar[int]
    BEST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BEST_FIELD_NUMBER: _ClassVar[int]
    number: int
    state: TrialState
    hyperparameters: Hyperparameters
    value: float
    epochs_run: int
    best_epoch: int
    metrics: _containers.ScalarMap[str, float]
    seconds: float
    best: bool
    def __init__(self, number: _Optional[int] = ..., state: _Optional[_Union[TrialState, str]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., value: _Optional[float] = ..., epochs_run: _Optional[int] = ..., best_epoch: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., seconds: _Optional[float] = ..., best: _Optional[bool] = ...) -> None: ...

class Baseline(_message.Message):
    __slots__ = ("description", "metrics")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    description: str
    metrics: _containers.ScalarMap[str, float]
    def __init__(self, description: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ...) -> None: ...

class Example(_message.Message):
    __slots__ = ("text", "text_pair", "label")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TEXT_PAIR_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    text_pair: str
    label: str
    def __init__(self, text: _Optional[str] = ..., text_pair: _Optional[str] = ..., label: _Optional[str] = ...) -> None: ...

class Examples(_message.Message):
    __slots__ = ("examples",)
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    examples: _containers.RepeatedCompositeFieldContainer[Example]
    def __init__(self, examples: _Optional[_Iterable[_Union[Example, _Mapping]]] = ...) -> None: ...

class ModelRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class CreateJobRequest(_message.Message):
    __slots__ = ("task", "base_path", "base_model", "dataset_id", "examples", "validation_dataset_id", "validation_split", "hyperparameters", "model_name", "auto_promote", "idempotency_key", "search")
    TASK_FIELD_NUMBER: _ClassVar[int]
    BASE_PATH_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPLIT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    task: str
    base_path: str
    base_model: ModelRef
    dataset_id: str
    examples: Examples
    validation_dataset_id: str
    validation_split: float
    hyperparameters: Hyperparameters
    model_name: str
    auto_promote: bool
    idempotency_key: str
    search: Search
    def __init__(self, task: _Optional[str] = ..., base_path: _Optional[str] = ..., base_model: _Optional[_Union[ModelRef, _Mapping]] = ..., dataset_id: _Optional[str] = ..., examples: _Optional[_Union[Examples, _Mapping]] = ..., validation_dataset_id: _Optional[str] = ..., validation_split: _Optional[float] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., model_name: _Optional[str] = ..., auto_promote: _Optional[bool] = ..., idempotency_key: _Optional[str] = ..., search: _Optional[_Union[Search, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("epoch", "epochs", "step", "total_steps", "loss", "eta_seconds", "examples_per_second", "trial", "trials")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    ETA_SECONDS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    epochs: int
    step: int
    total_steps: int
    loss: float
    eta_seconds: float
    examples_per_second: float
    trial: int
    trials: int
    def __init__(self, epoch: _Optional[int] = ..., epochs: _Optional[int] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., eta_seconds: _Optional[float] = ..., examples_per_second: _Optional[float] = ..., trial: _Optional[int] = ..., trials: _Optional[int] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("model_name", "version", "format", "fp32_metrics", "int8_metrics", "gate", "size_bytes", "latency_ms", "promoted", "baseline", "trials", "hyperparameters", "selection", "estimated_metrics", "retrained", "comparison", "previous_metrics", "previous_comparison")
    class Fp32MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class Int8MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class EstimatedMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class PreviousMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    FP32_METRICS_FIELD_NUMBER: _ClassVar[int]
    INT8_METRICS_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    PROMOTED_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SELECTION_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_METRICS_FIELD_NUMBER: _ClassVar[int]
    RETRAINED_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_METRICS_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_COMPARISON_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    version: str
    format: str
    fp32_metrics: _containers.ScalarMap[str, float]
    int8_metrics: _containers.ScalarMap[str, float]
    gate: str
    size_bytes: int
    latency_ms: float
    promoted: bool
    baseline: Baseline
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    hyperparameters: Hyperparameters
    selection: str
    estimated_metrics: _containers.ScalarMap[str, float]
    retrained: bool
    comparison: str
    previous_metrics: _containers.ScalarMap[str, float]
    previous_comparison: str
    def __init__(self, model_name: _Optional[str] = ..., version: _Optional[str] = ..., format: _Optional[str] = ..., fp32_metrics: _Optional[_Mapping[str, float]] = ..., int8_metrics: _Optional[_Mapping[str, float]] = ..., gate: _Optional[str] = ..., size_bytes: _Optional[int] = ..., latency_ms: _Optional[float] = ..., promoted: _Optional[bool] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., selection: _Optional[str] = ..., estimated_metrics: _Optional[_Mapping[str, float]] = ..., retrained: _Optional[bool] = ..., comparison: _Optional[str] = ..., previous_metrics: _Optional[_Mapping[str, float]] = ..., previous_comparison: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "task", "model_name", "base_model", "dataset_id", "validation_dataset_id", "hyperparameters", "progress", "metrics", "result", "error", "auto_promote", "created", "started", "finished", "idempotency_key", "search")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_DATASET_ID_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    AUTO_PROMOTE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SEARCH_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    task: str
    model_name: str
    base_model: str
    dataset_id: str
    validation_dataset_id: str
    hyperparameters: Hyperparameters
    progress: Progress
    metrics: _containers.ScalarMap[str, float]
    result: JobResult
    error: str
    auto_promote: bool
    created: str
    started: str
    finished: str
    idempotency_key: str
    search: Search
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., task: _Optional[str] = ..., model_name: _Optional[str] = ..., base_model: _Optional[str] = ..., dataset_id: _Optional[str] = ..., validation_dataset_id: _Optional[str] = ..., hyperparameters: _Optional[_Union[Hyperparameters, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., error: _Optional[str] = ..., auto_promote: _Optional[bool] = ..., created: _Optional[str] = ..., started: _Optional[str] = ..., finished: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., search: _Optional[_Union[Search, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("states", "page_size", "page_token")
    STATES_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    states: _containers.RepeatedScalarFieldContainer[JobState]
    page_size: int
    page_token: str
    def __init__(self, states: _Optional[_Iterable[_Union[JobState, str]]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("id", "after_sequence")
    ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    id: str
    after_sequence: int
    def __init__(self, id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("sequence", "time", "state", "message", "progress", "metrics", "result", "trial", "baseline")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_FIELD_NUMBER: _ClassVar[int]
    BASELINE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    time: str
    state: JobState
    message: str
    progress: Progress
    metrics: _containers.ScalarMap[str, float]
    result: JobResult
    trial: Trial
    baseline: Baseline
    def __init__(self, sequence: _Optional[int] = ..., time: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., message: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., trial: _Optional[_Union[Trial, _Mapping]] = ..., baseline: _Optional[_Union[Baseline, _Mapping]] = ...) -> None: ...
