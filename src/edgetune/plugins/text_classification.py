"""Built-in task: single-label text classification, with an optional text pair.

Registered through `edgetune_register_tasks` exactly like a third-party plugin.
Training-side methods import torch and transformers lazily, so serving never loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from edgetune.errors import InvalidArgument, ModelLoadError
from edgetune.plugins import hookimpl
from edgetune.plugins.baselines import TFIDF_DESCRIPTION, joined, tfidf_logistic_regression
from edgetune.plugins.metrics import classification_metrics
from edgetune.task import (
    Array,
    Baseline,
    Encoded,
    Input,
    ModelFiles,
    Result,
    Task,
    TaskRuntime,
    Text,
    TextPair,
    TokenIds,
    label_head,
    single_label_results,
)

DEFAULT_MAX_LENGTH = 512


def tokenizer_options(model: Any, preprocessor: Any, max_length: int | None) -> dict[str, Any]:
    """Serving options of a transformers text model: the max sequence length (the training
    length, within what the model takes) and the pad token, for the Rust tokenizer."""
    limit = getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
    model_max = getattr(preprocessor, "model_max_length", limit) or limit
    return {
        "max_length": int(min(limit, model_max, max_length or limit)),
        "pad_token": str(preprocessor.pad_token),
        "pad_token_id": int(preprocessor.pad_token_id),
    }


class TextClassificationRuntime(TaskRuntime):
    """Batch tokenization with the Rust tokenizer, softmax and top-k on the way out."""

    def __init__(self, model: ModelFiles) -> None:
        options = model.manifest.task_options
        try:
            self.tokenizer = Tokenizer.from_file(str(model.path / "tokenizer.json"))
        except Exception as exc:
            raise ModelLoadError(f"{model.path}: cannot read tokenizer.json: {exc}") from None
        self.max_length = int(options.get("max_length", DEFAULT_MAX_LENGTH))
        self.pad_id = int(options.get("pad_token_id", 0))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(
            pad_id=self.pad_id, pad_token=str(options.get("pad_token", "[PAD]"))
        )
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.labels = model.manifest.labels
        self.input_names = set(model.input_names)

    def encode(self, inputs: Sequence[Input]) -> Encoded:
        """Tokenize texts in one Rust batch call; token-id inputs are checked and padded."""
        if all(isinstance(item, Text | TextPair) for item in inputs):
            batch = [
                item.text if isinstance(item, Text) else (item.text, item.text_pair)
                for item in inputs
                if isinstance(item, Text | TextPair)
            ]
            encodings = self.tokenizer.encode_batch(batch)
            ids = np.array([e.ids for e in encodings], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
            types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        else:
            ids, mask, types = self._encode_mixed(inputs)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feeds["token_type_ids"] = types
        if "position_ids" in self.input_names:
            feeds["position_ids"] = np.clip(mask.cumsum(axis=1) - 1, 0, None)
        return Encoded(feeds)

    def _encode_mixed(self, inputs: Sequence[Input]) -> tuple[Array, Array, Array]:
        """Texts and token ids in one batch, padded to the longest row."""
        rows: list[tuple[list[int], list[int], list[int]]] = []
        for index, item in enumerate(inputs):
            if isinstance(item, TokenIds):
                rows.append(self._check_tokens(index, item))
            elif isinstance(item, TextPair):
                enc = self.tokenizer.encode(item.text, item.text_pair)
                rows.append((enc.ids, enc.attention_mask, enc.type_ids))
            elif isinstance(item, Text):
                enc = self.tokenizer.encode(item.text)
                rows.append((enc.ids, enc.attention_mask, enc.type_ids))
        width = max(len(row[0]) for row in rows)
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        types = np.zeros((len(rows), width), dtype=np.int64)
        for i, (row_ids, row_mask, row_types) in enumerate(rows):
            n = len(row_ids)
            ids[i, :n], mask[i, :n], types[i, :n] = row_ids, row_mask, row_types
        return ids, mask, types

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


class TextClassification(Task):
    """Single-label classification of a text or a text pair."""

    name = "text-classification"
    description = "Single-label classification of a text or a text pair (softmax over labels)."
    input_kinds = (Text, TextPair, TokenIds)
    optimum_task = "text-classification"

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`text` (and optional `text_pair`) must be non-empty strings; `label` one value."""
        _text_field(example, "text", row)
        if example.get("text_pair") not in (None, ""):
            _text_field(example, "text_pair", row)
        label = example.get("label")
        # Before str(): a list may nest deeper than str() can recurse.
        if isinstance(label, list | dict):
            raise InvalidArgument(f"row {row}: field 'label' must be one value, not a list")
        if label is None or str(label).strip() == "":
            raise InvalidArgument(f"row {row}: field 'label' is missing")
        return [str(label)]

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """A Text, or a TextPair when the example has a second text."""
        if example.get("text_pair"):
            return TextPair(str(example["text"]), str(example["text_pair"]))
        return Text(str(example["text"]))

    def build_model(self, base: Path, labels: Sequence[str]) -> Any:
        """AutoModelForSequenceClassification with a fresh head when the label set differs."""
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            base,
            **label_head(labels),
        )
        if model.config.pad_token_id is None:
            # Decoder (GPT-2 family) classifiers find the last real token through it.
            model.config.pad_token_id = model.config.eos_token_id
        return model

    def load_preprocessor(self, base: Path) -> Any:
        """The base model's fast tokenizer; decoders without a pad token pad with EOS."""
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base, use_fast=True)  # type: ignore[no-untyped-call]
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def build_features(
        self,
        examples: Sequence[Mapping[str, Any]],
        preprocessor: Any,
        labels: Sequence[str],
        max_length: int,
    ) -> list[dict[str, Any]]:
        """Tokenized texts (and pairs) with label ids, tokenized in one batch call."""
        index = {label: i for i, label in enumerate(labels)}
        label_ids = []
        for row, example in enumerate(examples, start=1):
            (label,) = self.example_labels(example, row)
            if label not in index:
                raise InvalidArgument(
                    f"row {row}: label {label!r} is not one of the training labels"
                )
            label_ids.append(index[label])
        # Through example_input, so a subclass with other field names reuses all of this.
        inputs = [self.example_input(e) for e in examples]
        texts = [item.text for item in inputs if isinstance(item, Text | TextPair)]
        has_pairs = [isinstance(item, TextPair) for item in inputs]
        if any(has_pairs) and not all(has_pairs):
            raise InvalidArgument("field 'text_pair' must be on every row or on none")
        pairs = [item.text_pair for item in inputs if isinstance(item, TextPair)] or None
        encoded = preprocessor(texts, pairs, truncation=True, max_length=max_length)
        return [
            {**{key: values[i] for key, values in encoded.items()}, "labels": label_ids[i]}
            for i in range(len(examples))
        ]

    def collate(self, preprocessor: Any) -> Any:
        """Pads each batch to its longest example."""
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(preprocessor, return_tensors="pt")

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Accuracy, macro precision / recall / F1 and per-label F1."""
        return classification_metrics(np.asarray(logits).argmax(axis=-1), label_ids, labels)

    def task_options(
        self, model: Any, preprocessor: Any, max_length: int | None = None
    ) -> dict[str, Any]:
        """Max sequence length and pad token for the serving tokenizer."""
        return tokenizer_options(model, preprocessor, max_length)

    def token_lengths(self, examples: Sequence[Mapping[str, Any]], preprocessor: Any) -> list[int]:
        """Token counts of the texts (and pairs) with the model's tokenizer."""
        inputs = [self.example_input(e) for e in examples]
        texts = [item.text for item in inputs if isinstance(item, Text | TextPair)]
        pairs = [item.text_pair for item in inputs if isinstance(item, TextPair)] or None
        return [len(ids) for ids in preprocessor(texts, pairs)["input_ids"]]

    def baseline(
        self,
        train: Sequence[Mapping[str, Any]],
        validation: Sequence[Mapping[str, Any]],
        labels: Sequence[str],
    ) -> Baseline:
        """TF-IDF + logistic regression on the texts (a pair joined into one text)."""
        index = {label: i for i, label in enumerate(labels)}

        def texts(rows: Sequence[Mapping[str, Any]]) -> list[str]:
            inputs = [self.example_input(row) for row in rows]
            return [
                joined(item.text, item.text_pair if isinstance(item, TextPair) else None)
                for item in inputs
                if isinstance(item, Text | TextPair)
            ]

        def targets(rows: Sequence[Mapping[str, Any]]) -> Array:
            return np.array(
                [index[self.example_labels(row, n)[0]] for n, row in enumerate(rows, start=1)]
            )

        predicted = tfidf_logistic_regression(texts(train), targets(train), texts(validation))
        return Baseline(
            TFIDF_DESCRIPTION, classification_metrics(predicted, targets(validation), labels)
        )

    def runtime(self, model: ModelFiles) -> TaskRuntime:
        """A runtime bound to this version's tokenizer and labels."""
        return TextClassificationRuntime(model)

    def warmup_inputs(self) -> list[Input]:
        """A short and a paired text."""
        return [Text("warm up"), TextPair("warm up", "the model")]


def _text_field(example: Mapping[str, Any], name: str, row: int) -> str:
    value = example.get(name)
    if value is None:
        raise InvalidArgument(f"row {row}: field {name!r} is missing")
    if not isinstance(value, str):
        raise InvalidArgument(f"row {row}: field {name!r} must be a string")
    if not value.strip():
        raise InvalidArgument(f"row {row}: field {name!r} is empty")
    return value


@hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the text-classification task."""
    register(TextClassification())
