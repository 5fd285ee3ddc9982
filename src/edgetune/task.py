"""The Task contract: everything task-specific lives behind it, so the core never names a task.

A task plugin registers one `Task` per task name (see `edgetune.plugins.hookspecs`). The core
calls it on two paths:

* **data** (in the server, plain Python): `example_labels` checks each raw example and
  names its labels, `example_input` turns one into a serving input for evaluation;
* **build / train** (a separate process that may import torch and transformers):
  `build_model`, `load_preprocessor`, `build_features`, `collate`, `compute_metrics`,
  `task_options`, and `optimum_task` for the Optimum ONNX export;
* **serve** (imports only numpy, onnxruntime and tokenizers): `runtime` builds a
  `TaskRuntime` per loaded model version, whose `encode` turns a batch of inputs into ONNX
  Runtime feeds and whose `decode` turns the outputs into one `Result` per input.

Inputs are a closed set of kinds that mirror the `Input.kind` oneof of the public proto;
results carry ranked labels and, for tasks that label parts of the input, spans. Tasks
choose which input kinds they accept; the core rejects the others before calling them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from edgetune.errors import InvalidArgument
from edgetune.store.manifest import Manifest

# ---- inputs: one class per kind of the proto's Input.kind oneof -------------------------


@dataclass(frozen=True, slots=True)
class Text:
    """A UTF-8 text."""

    kind: ClassVar[str] = "text"
    text: str


@dataclass(frozen=True, slots=True)
class TextPair:
    """Two texts classified together."""

    kind: ClassVar[str] = "text_pair"
    text: str
    text_pair: str


@dataclass(frozen=True, slots=True)
class Image:
    """Encoded image bytes (PNG or JPEG)."""

    kind: ClassVar[str] = "image"
    data: bytes


@dataclass(frozen=True, slots=True)
class TokenIds:
    """Token ids from a client that tokenizes itself; the mask is all ones when empty."""

    kind: ClassVar[str] = "tokens"
    ids: tuple[int, ...]
    attention_mask: tuple[int, ...] = ()


Input = Text | TextPair | Image | TokenIds

# ---- results -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelScore:
    """A label with its score; `selected` marks the labels the task predicts."""

    label: str
    score: float
    selected: bool = False


@dataclass(frozen=True, slots=True)
class Span:
    """A labelled part of a text input, offsets in code points, end exclusive."""

    start: int
    end: int
    label: str
    score: float
    text: str


@dataclass(slots=True)
class Result:
    """What a task answers for one input."""

    labels: list[LabelScore] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)


# ---- serving -----------------------------------------------------------------------------

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """A model version as a task runtime sees it: its folder, manifest and ONNX signature."""

    path: Path
    manifest: Manifest
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]


@dataclass(slots=True)
class Encoded:
    """ONNX Runtime feeds for a batch, plus whatever `decode` needs back (e.g. offsets)."""

    feeds: dict[str, Array]
    state: Any = None
    rows: Array | None = None
    """The input each feed row belongs to, when some input takes several rows (a long text
    read in windows); None: one row per input. Whoever runs the session passes the outputs
    through `per_input` before `decode`."""

    def per_input(self, outputs: Sequence[Array]) -> list[Array]:
        """The session outputs with one row per input: the rows of one input averaged (for
        outputs with one row per feed row, e.g. logits)."""
        if self.rows is None:
            return list(outputs)
        counts = np.bincount(self.rows)
        merged = []
        for output in outputs:
            total = np.zeros((len(counts), *output.shape[1:]), dtype=np.float64)
            np.add.at(total, self.rows, output)
            shape = (len(counts),) + (1,) * (output.ndim - 1)
            merged.append((total / counts.reshape(shape)).astype(output.dtype))
        return merged


class TaskRuntime(ABC):
    """The serving half of a task for one loaded model version. Must be thread-safe."""

    @abstractmethod
    def encode(self, inputs: Sequence[Input]) -> Encoded:
        """Turn a batch of inputs (all of kinds the task accepts) into session feeds.

        Raise `edgetune.errors.InvalidArgument` naming `inputs[i]` for an input the model
        cannot take (e.g. a token id outside the vocabulary).
        """

    @abstractmethod
    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """Turn the session outputs (in `ModelFiles.output_names` order) into one Result per
        input. `top_k` = 0 means every label."""


# ---- the training half's objects -------------------------------------------------------
# Protocols rather than transformers classes: the contract module must import on a serving
# install (no torch or transformers), and a plugin may bring any model that behaves so.


class ModelConfig(Protocol):
    """What the core reads of a model's configuration (transformers' `PretrainedConfig`
    has it): the label of each output, in output order."""

    id2label: dict[int, str]


class TrainableModel(Protocol):
    """A model the training process fine-tunes and Optimum exports: a torch module called
    with a batch's tensors as keywords, answering `loss` and `logits`, whose
    `save_pretrained(folder)` writes a folder `build_model` can read back. Every transformers
    `PreTrainedModel` is one."""

    config: ModelConfig

    def __call__(self, **batch: Any) -> Any:
        """The forward pass on one collated batch (its "labels" included)."""

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:
        """Write config and weights (safetensors) into save_directory."""


class Preprocessor(Protocol):
    """A base model's tokenizer or image processor: called on a batch of raw inputs, and
    saved beside the exported model so that serving reads its files (tokenizer.json,
    preprocessor_config.json). transformers' tokenizers and image processors are ones."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Preprocess a batch (texts, text pairs, images ...)."""

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> Any:
        """Write the files serving and a later `load_preprocessor` read into save_directory."""


Feature = dict[str, Any]
"""One example made model-ready by `build_features`: the model's inputs and its "labels"."""


class Collator(Protocol):
    """Turns a list of features into one batch of torch tensors (keyword arguments of the
    model, "labels" included)."""

    def __call__(self, features: list[Feature], /) -> Any:
        """The batch of these features."""


# ---- the task ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Baseline:
    """A classical model's validation metrics (see `Task.baseline`)."""

    description: str
    metrics: dict[str, float]


class Task(ABC):
    """A kind of model edgetune can build, train, export and serve."""

    name: ClassVar[str]
    """Unique task name (kebab-case by convention); stored in every manifest."""
    description: ClassVar[str]
    """One line shown by `edgetune plugins` and GetServerInfo."""
    input_kinds: ClassVar[tuple[type[Input], ...]]
    """Input kinds the task accepts."""
    optimum_task: ClassVar[str]
    """The Optimum export task (`optimum.exporters.TasksManager`) for this task's models."""

    selection_metric: ClassVar[str] = "f1"
    """The validation metric that picks the best checkpoint and drives early stopping."""
    returns_spans: ClassVar[bool] = False
    """Whether results carry spans (labelled parts of a text input); the v2 protocol then
    offers a `spans` output."""

    gate_metric: ClassVar[str] = "accuracy"
    """The metric the int8-vs-fp32 accuracy gate compares."""

    search_metrics: ClassVar[tuple[str, ...]] = ("accuracy", "precision", "recall", "f1")
    """Metrics of `compute_metrics` a hyperparameter search may maximize: higher is better,
    and 1 is a perfect score (a search stops at it)."""
    search_start: ClassVar[Mapping[str, float]] = {}
    """Where a hyperparameter search's first trial starts for this task's models, by
    hyperparameter name, over the server's defaults (for what the request does not set):
    the search budget is counted in multiples of that trial, so a good start is worth
    most. Empty: the server's defaults."""

    # -- data: plain Python, runs in the server to validate data sets before any training --

    @abstractmethod
    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """Check one raw example and return its labels (one for single-label tasks).

        Raise `edgetune.errors.InvalidArgument` naming the row (1-based) and the field
        that is wrong: a missing field, an empty text, a value of the wrong type.

        The core stratifies the validation split on these labels, needs at least two
        distinct ones in the training rows, checks that validation rows use only those, and
        keeps them in the manifest. A task that predicts a number rather than a class
        returns the band its target falls in (e.g. "low", "mid", "high"): the labels are
        then strata, and its targets come from `build_features`.
        """

    @abstractmethod
    def example_input(self, example: Mapping[str, Any]) -> Input:
        """The serving input for a raw example (to evaluate exported models end to end)."""

    # -- build / train: may import torch and transformers, never on the serving path --

    @abstractmethod
    def build_model(self, base: Path, labels: Sequence[str]) -> TrainableModel:
        """A trainable transformers model from a base model folder, with a head for labels."""

    def build_model_from_descriptions(
        self, base: Path, labels: Sequence[str], descriptions: Mapping[str, str]
    ) -> TrainableModel:
        """A model for labels made from what they mean, without training rows (zero-shot):
        `descriptions` maps some labels to a line of text (the others stand for themselves).
        `import-model --labels-file` and `Models.ImportModel` with label_descriptions call
        it. Default: refused, the task takes no label descriptions.
        """
        raise InvalidArgument(
            f"label_descriptions: task {self.name!r} does not take label descriptions"
        )

    @abstractmethod
    def load_preprocessor(self, base: Path) -> Preprocessor:
        """The base model's tokenizer or image processor (saved beside the exported model)."""

    @abstractmethod
    def build_features(
        self,
        examples: Sequence[Mapping[str, Any]],
        preprocessor: Preprocessor,
        labels: Sequence[str],
        max_length: int,
    ) -> list[Feature]:
        """Model-ready features, one dict per example, each with its "labels" target.

        Examples were checked with `example_labels`; a label outside `labels` is an error.
        """

    @abstractmethod
    def collate(self, preprocessor: Preprocessor) -> Collator:
        """A callable that turns a list of feature dicts into a batch of torch tensors."""

    def prepare_model(
        self, model: TrainableModel, features: Sequence[Feature], collate: Collator
    ) -> None:
        """Called once on a model fresh from `build_model`, before its first epoch, with the
        features it is about to train on (never when training resumes from a checkpoint):
        a task may set weights from the training rows, e.g. a head whose rows are each
        label's mean embedding (few-shot). Runs in the training process. Default: nothing.
        """
        return None

    @abstractmethod
    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Evaluation metrics (accuracy, precision, recall, F1 ...) from model outputs.

        `label_ids` are the features' "labels" targets (label ids, multi-hot rows, or the
        numbers a regression predicts). The selection, search and gate metrics must be
        higher-is-better: the core maximizes them and the gate measures their drop."""

    def task_options(
        self, model: TrainableModel, preprocessor: Preprocessor, max_length: int | None = None
    ) -> dict[str, Any]:
        """Serving options stored in the manifest.

        :param max_length: the sequence length the model was trained with, so that serving
            cuts inputs where training did; None for a model imported as it is.
        """
        return {}

    def trained_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The serving options of a model a job trained, from its `task_options`: what
        applies only to models trained here, e.g. reading a long text in several windows
        when training saw each text's first max_length tokens. Called once per job, before
        the exported model is evaluated. Default: as is."""
        return options

    def calibrate(self, options: dict[str, Any], metrics: Mapping[str, float]) -> dict[str, Any]:
        """Serving options adjusted from the exported fp32 model's validation metrics, e.g.
        decision thresholds tuned on the validation data; the result is what the manifest
        keeps. Called once per job, after export and before the int8 gate. Default: as is.
        """
        return options

    def token_lengths(
        self, examples: Sequence[Mapping[str, Any]], preprocessor: Preprocessor
    ) -> list[int] | None:
        """Each example's length in tokens before truncation, so a search can choose
        max_length from the data; None (the default) for inputs without a length."""
        return None

    def baseline(
        self,
        train: Sequence[Mapping[str, Any]],
        validation: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
    ) -> Baseline | None:
        """A classical model (e.g. scikit-learn) fit on the training rows and scored on the
        validation rows with this task's metrics, so a job shows what fine-tuning earns
        over it. Runs in the training process. Default: None (no baseline)."""
        return None

    # -- serve: numpy, onnxruntime and tokenizers only --

    @abstractmethod
    def runtime(self, model: ModelFiles) -> TaskRuntime:
        """The serving half for one model version (loads its tokenizer or processor)."""

    @abstractmethod
    def warmup_inputs(self) -> list[Input]:
        """A small batch run once at load so the first real request is not slow."""


def softmax(logits: Array) -> npt.NDArray[np.float32]:
    """Row-wise softmax in float32, stable for large logits."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted.astype(np.float32))
    result: npt.NDArray[np.float32] = exp / exp.sum(axis=-1, keepdims=True)
    return result


def label_head(labels: Sequence[str]) -> dict[str, Any]:
    """`from_pretrained` arguments for a model with a head over labels: a fresh head when
    the base's label set differs, weights from safetensors only (never a pickle)."""
    return {
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: i for i, label in enumerate(labels)},
        "ignore_mismatched_sizes": True,
        "use_safetensors": True,
    }


def single_label_results(logits: Array, labels: Sequence[str], top_k: int) -> list[Result]:
    """One Result per row of logits: labels ranked by softmax score, the best `selected`,
    cut to top_k (0 = all). The decode of every single-label classifier."""
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")[:, : top_k or probs.shape[1]]
    return [
        Result(
            labels=[
                LabelScore(labels[j], float(row[j]), selected=(rank == 0))
                for rank, j in enumerate(best)
            ]
        )
        for row, best in zip(probs, order, strict=True)
    ]


IGNORE_INDEX = -100
"""Fill for targets that are padded to a common length (e.g. one target per token, texts
of different lengths): tasks with per-position targets leave such positions unscored,
as torch's cross-entropy and transformers' collators do."""


def pad_to_longest(arrays: Sequence[Array], fill: float, *, from_axis: int = 0) -> list[Array]:
    """The arrays padded at the end of each axis from `from_axis` on to the largest size
    among them, so that they stack (or, with from_axis=1, concatenate); returned unchanged
    when those sizes already agree.

    Per-token outputs differ in sequence length from batch to batch (and per-token targets
    from example to example); whole-input outputs and targets always agree.
    """
    if len({a.shape[from_axis:] for a in arrays}) <= 1:
        return list(arrays)
    longest = np.max([a.shape[from_axis:] for a in arrays], axis=0)
    padded = []
    for array in arrays:
        growth = [int(n - size) for n, size in zip(longest, array.shape[from_axis:], strict=True)]
        widths = [(0, 0)] * from_axis + [(0, extra) for extra in growth]
        padded.append(np.pad(array, widths, constant_values=fill))
    return padded
