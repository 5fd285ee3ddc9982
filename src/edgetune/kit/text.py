"""Text tasks on the kit: a model's tokenizer at serving time, the transformers side at
training time, and `TextTask` / `TextClassifier`, the bases of every task over texts (and
text pairs) with one output row per input.

Serving uses the exported tokenizer.json through the Rust `tokenizers` library; torch and
transformers are imported inside the training methods only, so importing this module on a
serving-only install loads neither.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, cast

import numpy as np
from tokenizers import Encoding, Tokenizer

from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.kit.baselines import TFIDF_DESCRIPTION, input_texts, tfidf_logistic_regression
from edgetune.kit.metrics import classification_metrics
from edgetune.kit.rows import LabelIds
from edgetune.task import (
    Array,
    Baseline,
    Collator,
    Encoded,
    Feature,
    Input,
    ModelFiles,
    Preprocessor,
    Result,
    Task,
    TaskRuntime,
    Text,
    TextPair,
    TokenIds,
    TrainableModel,
    label_head,
    single_label_results,
)

DEFAULT_MAX_LENGTH = 512
"""Sequence length for a model whose config and tokenizer name none."""


class TextTokenizer(Preprocessor, Protocol):
    """A transformers fast tokenizer, as text tasks use it."""

    pad_token: str | None
    pad_token_id: int | None
    model_max_length: int


def as_tokenizer(preprocessor: Preprocessor) -> TextTokenizer:
    """The preprocessor of a text task as the tokenizer it is: the core hands back what
    `load_preprocessor` returned, which for text tasks is `load_tokenizer`'s."""
    return cast(TextTokenizer, preprocessor)


# ---- training: transformers, imported inside -------------------------------------------


def load_tokenizer(base: Path, **options: Any) -> TextTokenizer:
    """The base model's fast tokenizer; one without a pad token (decoders such as GPT-2)
    pads with its end-of-text token, or its unknown token.

    :param options: more `AutoTokenizer.from_pretrained` arguments (e.g. add_prefix_space).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True, **options)  # type: ignore[no-untyped-call]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    loaded: TextTokenizer = tokenizer
    return loaded


def sequence_classifier(
    base: Path, labels: Sequence[str], problem_type: str | None = None
) -> TrainableModel:
    """AutoModelForSequenceClassification with one output per label (a fresh head when the
    base's labels differ).

    :param problem_type: transformers' config.problem_type, which picks the loss at each
        forward and is kept in the export ("multi_label_classification", "regression");
        None lets transformers choose from the targets.
    """
    from transformers import AutoModelForSequenceClassification

    extra = {"problem_type": problem_type} if problem_type else {}
    model = AutoModelForSequenceClassification.from_pretrained(base, **label_head(labels), **extra)
    if model.config.pad_token_id is None:
        # Decoder (GPT-2 family) classifiers find the last real token through it.
        model.config.pad_token_id = model.config.eos_token_id
    trainable: TrainableModel = model
    return trainable


def tokenize(tokenizer: TextTokenizer, inputs: Sequence[Input], **options: Any) -> Any:
    """transformers' batch encoding of text or text-pair inputs, in one call.

    :raises InvalidArgument: some inputs are pairs and others are not.
    """
    texts = [item.text for item in inputs if isinstance(item, Text | TextPair)]
    pairs = [item.text_pair for item in inputs if isinstance(item, TextPair)]
    if pairs and len(pairs) != len(texts):
        raise InvalidArgument("field 'text_pair' must be on every row or on none")
    return tokenizer(texts, pairs or None, **options)


def tokenizer_options(
    model: TrainableModel, tokenizer: TextTokenizer, max_length: int | None
) -> dict[str, Any]:
    """Serving options of a transformers text model: the max sequence length (the training
    length, within what the model takes) and the pad token, for the Rust tokenizer."""
    limit = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    model_max = getattr(tokenizer, "model_max_length", limit) or limit
    return {
        "max_length": int(min(limit, model_max, max_length or limit)),
        "pad_token": str(tokenizer.pad_token),
        "pad_token_id": int(tokenizer.pad_token_id or 0),
    }


# ---- serving: tokenizers and numpy only ----------------------------------------------------


def onnx_feeds(
    ids: Array, mask: Array, types: Array, input_names: Sequence[str] | set[str]
) -> dict[str, Array]:
    """Session feeds of a tokenized batch: token_type_ids and position_ids (counted over
    real tokens, as transformers does for left-padded decoders) only where the graph takes
    them, since ONNX Runtime refuses inputs a graph does not have."""
    feeds = {"input_ids": ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = types
    if "position_ids" in input_names:
        feeds["position_ids"] = np.clip(mask.cumsum(axis=1) - 1, 0, None)
    return feeds


HEAD_CHARS_PER_TOKEN = 8
"""A text longer than this many characters per `max_length` token is tokenized from its
head (cut at a space) first: tokenizing costs its whole length, though only `max_length`
tokens are kept (a 1,745-character BBC article: 0.68 ms whole, 0.25 ms for its first 800
characters, for the same 128 tokens). English runs about 4-5 characters a token."""

WINDOW_OVERLAP = 4
"""Windows of a long text overlap by a quarter of max_length (32 of 128 tokens), so a
sentence cut at one window's end is whole in the next."""

WHITESPACE_SPLITS = {"BertPreTokenizer", "Whitespace", "WhitespaceSplit"}
"""Pre-tokenizers (tokenizer.json types) that always split at a space; ByteLevel (with its
regex) and Metaspace (with split) do too, given their options."""


def splits_at_spaces(pre_tokenizer: Mapping[str, Any] | None) -> bool:
    """Whether a tokenizer.json pre-tokenizer always ends a piece at a space, so that the
    tokens of a text cut at a space are the first tokens of the whole text (normalizers
    work locally; pre-tokenizers only split, never join)."""
    if not pre_tokenizer:
        return False
    kind = pre_tokenizer.get("type")
    if kind == "Sequence":
        return any(splits_at_spaces(p) for p in pre_tokenizer.get("pretokenizers", []))
    return (
        kind in WHITESPACE_SPLITS
        or (kind == "ByteLevel" and bool(pre_tokenizer.get("use_regex", True)))
        or (kind == "Metaspace" and bool(pre_tokenizer.get("split", True)))
    )


def head(text: str, chars: int) -> str:
    """The text up to the last space before `chars` (all of it when shorter or no space)."""
    if len(text) <= chars:
        return text
    cut = text.rfind(" ", 0, chars)
    return text[:cut] if cut > 0 else text


class TokenizerRuntime(TaskRuntime):
    """Serving of a text model: its tokenizer.json, truncating and padding as the manifest's
    task options say (see `tokenizer_options`). `decode` is the single-label classifier's
    (softmax over the labels); tasks with another head override it."""

    def __init__(self, model: ModelFiles) -> None:
        """Load the version's tokenizer.json; ModelLoadError when it is missing or bad."""
        options = model.manifest.task_options
        try:
            text = (model.path / "tokenizer.json").read_text(encoding="utf-8")
            self.tokenizer = Tokenizer.from_str(text)
            config = json.loads(text)
        except Exception as exc:
            raise ModelLoadError(f"{model.path}: cannot read tokenizer.json: {exc}") from None
        self.max_length = int(options.get("max_length", DEFAULT_MAX_LENGTH))
        self.windows = max(1, int(options.get("windows", 1)))
        """A text longer than max_length is read in up to this many windows (see
        `TextClassifier.read_windows`); 1: its first max_length tokens only."""
        self.head_chars = (
            HEAD_CHARS_PER_TOKEN * self.max_length * self.windows
            if splits_at_spaces(config.get("pre_tokenizer"))
            else 0
        )
        """Texts longer than this are tokenized from their head first; 0 = never."""
        self.pad_id = int(options.get("pad_token_id", 0))
        stride = self.max_length // WINDOW_OVERLAP if self.windows > 1 else 0
        self.tokenizer.enable_truncation(self.max_length, stride=stride)
        self.tokenizer.enable_padding(
            pad_id=self.pad_id, pad_token=str(options.get("pad_token", "[PAD]"))
        )
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.labels = model.manifest.labels
        self.input_names = set(model.input_names)

    def tokenize(
        self, inputs: Sequence[Text | TextPair]
    ) -> tuple[dict[str, Array], list[Encoding]]:
        """Feeds for texts and text pairs, tokenized in one Rust batch call, and their
        encodings (offsets, word ids) for a `decode` that needs them.

        A long text is tokenized from its head (`head_chars`): when the head alone already
        has more tokens than the model reads (`windows` windows and more), those are the
        whole text's (offsets too: the head is a prefix); when one head falls short, the
        batch is tokenized again whole."""
        batch = [
            item.text if isinstance(item, Text) else (item.text, item.text_pair) for item in inputs
        ]
        heads = [
            head(text, self.head_chars) if self.head_chars and isinstance(text, str) else text
            for text in batch
        ]
        encodings = self.tokenizer.encode_batch(heads)
        if any(
            cut is not text and len(encoding.overflowing) < self.windows
            for cut, text, encoding in zip(heads, batch, encodings, strict=True)
        ):
            encodings = self.tokenizer.encode_batch(batch)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        return onnx_feeds(ids, mask, types, self.input_names), encodings

    def encode(self, inputs: Sequence[Input]) -> Encoded:
        """Texts and pairs in one batch call; token-id inputs are checked and padded. A text
        longer than max_length takes a row for each of its first `windows` windows (its
        outputs are averaged: `Encoded.rows`)."""
        texts = [item for item in inputs if isinstance(item, Text | TextPair)]
        if len(texts) == len(inputs):
            feeds, encodings = self.tokenize(texts)
            if self.windows == 1 or not any(e.overflowing for e in encodings):
                return Encoded(feeds)
            windows = [
                [e, *e.overflowing[: self.windows - 1]] if isinstance(item, Text) else [e]
                for item, e in zip(texts, encodings, strict=True)
            ]
            read = [(w.ids, w.attention_mask, w.type_ids) for each in windows for w in each]
            owners = np.repeat(np.arange(len(windows)), [len(each) for each in windows])
            return Encoded(self._padded(read), rows=owners)
        rows: list[tuple[list[int], list[int], list[int]]] = []
        for index, item in enumerate(inputs):
            if isinstance(item, TokenIds):
                rows.append(self._check_tokens(index, item))
            elif isinstance(item, Text | TextPair):
                enc = self.tokenizer.encode(*self._texts(item))
                rows.append((enc.ids, enc.attention_mask, enc.type_ids))
            else:
                raise InvalidArgument(f"inputs[{index}]: this model takes text input")
        return Encoded(self._padded(rows))

    def _padded(self, rows: Sequence[tuple[list[int], list[int], list[int]]]) -> dict[str, Array]:
        """Feeds of (ids, mask, type ids) rows, padded to the longest, as the tokenizer pads
        a batch of texts."""
        width = max(len(row[0]) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (row_ids, row_mask, row_types) in enumerate(rows):
            n = len(row_ids)
            ids[i, :n], mask[i, :n], types[i, :n] = row_ids, row_mask, row_types
        return onnx_feeds(ids, mask, types, self.input_names)

    @staticmethod
    def _texts(item: Text | TextPair) -> tuple[str] | tuple[str, str]:
        return (item.text,) if isinstance(item, Text) else (item.text, item.text_pair)

    def _check_tokens(self, index: int, item: TokenIds) -> tuple[list[int], list[int], list[int]]:
        field = f"inputs[{index}].tokens"
        if not item.ids:
            raise InvalidArgument(f"{field}.ids is empty")
        if len(item.ids) > self.max_length:
            raise InvalidArgument(
                f"{field}.ids has {len(item.ids)} tokens; "
                f"this model takes at most {self.max_length}"
            )
        ids = np.asarray(item.ids)
        bad = np.flatnonzero((ids < 0) | (ids >= self.vocab_size))
        if bad.size:
            raise InvalidArgument(
                f"{field}.ids[{bad[0]}] = {ids[bad[0]]} is outside the vocabulary "
                f"(0..{self.vocab_size - 1})"
            )
        mask = list(item.attention_mask) or [1] * len(item.ids)
        if len(mask) != len(item.ids):
            raise InvalidArgument(
                f"{field}.attention_mask has {len(mask)} values; ids has {len(item.ids)}"
            )
        return list(item.ids), mask, [0] * len(item.ids)

    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """Softmax over the logits; the best label is `selected`."""
        return single_label_results(outputs[0], self.labels, top_k)


# ---- task bases ------------------------------------------------------------------------


class TextTask(Task):
    """A task over texts (or text pairs) with one output row per input, fine-tuned from a
    transformers sequence classifier and served by `TokenizerRuntime`.

    A subclass gives the data half (`example_labels`, `example_input`), the target of each
    row (`example_target`) and `compute_metrics`, and its `runtime_class` when its
    decoding is not a single-label softmax; the rest has defaults: tokenization, padding,
    serving options, token counts, and the runtime.
    """

    optimum_task = "text-classification"
    problem_type: ClassVar[str | None] = None
    """transformers' config.problem_type of the model (see `sequence_classifier`)."""
    outputs: ClassVar[tuple[str, ...]] = ()
    """The model's outputs when they are not one per label, e.g. ("score",) for a
    regression whose labels are bands of its target; empty: one output per label."""
    runtime_class: ClassVar[type[TokenizerRuntime]] = TokenizerRuntime
    """The serving half: `TokenizerRuntime`, or a subclass with the task's `decode`."""

    @abstractmethod
    def example_target(self, example: Mapping[str, Any], row: int, ids: LabelIds) -> Any:
        """The training target of a checked row (its features' "labels"): a label id, a
        multi-hot list, a number ...; a label outside `ids` is refused through it."""

    def targets(self, examples: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> list[Any]:
        """`example_target` of each row, rows numbered from 1."""
        ids = LabelIds(labels)
        return [self.example_target(e, row, ids) for row, e in enumerate(examples, start=1)]

    def build_model(self, base: Path, labels: Sequence[str]) -> TrainableModel:
        """A sequence classifier with one output per label (or per `outputs`)."""
        return sequence_classifier(base, self.outputs or labels, self.problem_type)

    def load_preprocessor(self, base: Path) -> Preprocessor:
        """The base model's fast tokenizer (see `load_tokenizer`)."""
        return load_tokenizer(base)

    def build_features(
        self,
        examples: Sequence[Mapping[str, Any]],
        preprocessor: Preprocessor,
        labels: Sequence[str],
        max_length: int,
    ) -> list[Feature]:
        """Each row's `example_input` tokenized (one batch call) with its target."""
        targets = self.targets(examples, labels)
        encoded = tokenize(
            as_tokenizer(preprocessor),
            [self.example_input(e) for e in examples],
            truncation=True,
            max_length=max_length,
        )
        return [
            {**{key: values[i] for key, values in encoded.items()}, "labels": targets[i]}
            for i in range(len(examples))
        ]

    def collate(self, preprocessor: Preprocessor) -> Collator:
        """Pads each batch to its longest example."""
        from transformers import DataCollatorWithPadding

        # The tokenizer load_preprocessor made; transformers types it as its own class.
        tokenizer: Any = preprocessor
        collator: Collator = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        return collator

    def task_options(
        self, model: TrainableModel, preprocessor: Preprocessor, max_length: int | None = None
    ) -> dict[str, Any]:
        """Max sequence length and pad token for the serving tokenizer."""
        return tokenizer_options(model, as_tokenizer(preprocessor), max_length)

    def token_lengths(
        self, examples: Sequence[Mapping[str, Any]], preprocessor: Preprocessor
    ) -> list[int]:
        """Token counts of the rows' texts (and pairs) with the model's tokenizer."""
        inputs = [self.example_input(e) for e in examples]
        return [len(ids) for ids in tokenize(as_tokenizer(preprocessor), inputs)["input_ids"]]

    def runtime(self, model: ModelFiles) -> TaskRuntime:
        """A `runtime_class` bound to this version's tokenizer and labels."""
        return self.runtime_class(model)

    def warmup_inputs(self) -> list[Input]:
        """A short text and a short pair, those of kinds the task takes."""
        inputs: list[Input] = [Text("warm up"), TextPair("warm up", "the model")]
        return [item for item in inputs if isinstance(item, self.input_kinds)]


class TextClassifier(TextTask):
    """Single-label classification of a text or text pair: a subclass gives its row schema
    (`example_labels` returning the one label, `example_input`) and its names."""

    read_windows: ClassVar[int] = 1
    """A model a job trains reads a text longer than its max_length in up to this many
    windows (overlapping by a quarter) and answers from their mean logits; 1 (the default):
    from the first window only. Training sees each text's first max_length tokens (the
    time budget); more windows read the rest. Off by default because it did not pay
    reliably for what it costs (a text of n windows costs about n short runs): on BBC News
    (the default job's configuration, 800 articles at 128 tokens, 1,425 held out, 5.3
    windows an article) 4 windows against 1 gave +0.21, +0.49 and +0.21 points on three
    training seeds (fp32 torch), but -0.21 on the default job's own published model (fp32
    ONNX; -0.14 int8), at ~3x an article's latency (served p50 70.8 ms against 22.8 ms for
    one 128-token window, fused int8 MiniLM, AMD EPYC with AVX2)."""

    def trained_options(self, options: dict[str, Any]) -> dict[str, Any]:
        """The text options, reading long texts in `read_windows` windows."""
        return {**options, "windows": self.read_windows} if self.read_windows > 1 else options

    def example_target(self, example: Mapping[str, Any], row: int, ids: LabelIds) -> int:
        """The id of the row's label."""
        return ids(self.example_labels(example, row)[0], row)

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Accuracy, macro precision / recall / F1, per-label F1 and the confusion matrix."""
        return classification_metrics(np.asarray(logits).argmax(axis=-1), label_ids, labels)

    def baseline(
        self,
        train: Sequence[Mapping[str, Any]],
        validation: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
    ) -> Baseline:
        """TF-IDF + logistic regression on the texts (a pair joined into one text)."""
        predicted = tfidf_logistic_regression(
            input_texts([self.example_input(row) for row in train]),
            np.array(self.targets(train, labels)),
            input_texts([self.example_input(row) for row in validation]),
        )
        actual = np.array(self.targets(validation, labels))
        return Baseline(TFIDF_DESCRIPTION, classification_metrics(predicted, actual, labels))
