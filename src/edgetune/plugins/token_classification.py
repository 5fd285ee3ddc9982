"""Built-in task: token classification (named entities) with BIO tags.

Data rows hold pre-split words and one BIO tag per word::

    {"tokens": ["Ada", "lives", "in", "London"], "tags": ["B-PER", "O", "O", "B-LOC"]}

**Words.** Serving takes a raw text, so a served "word" is what the model's own
tokenizer.json pre-tokenizer makes of it (for BERT: runs of letters and digits, and each
punctuation mark alone), read from the Rust tokenizer's word ids and character offsets.
Training uses the same rule: `example_input` joins a row's tokens with single spaces, and
`build_features` reads the served words of that joined text. The first sub-token of every
served word carries a label, every other position -100. A data-set word the pre-tokenizer
splits further (``U.S.``, ``German-born``) trains its first piece with the word's tag and
its later pieces with the ``I-`` form of it, so they join the same span when served
(when that ``I-`` tag is not a training label, the later pieces are left out).

**Alignment.** Training also tokenizes the words pre-split (``is_split_into_words``) and
checks that this gives the very tokens of the joined text, so the token positions of the
training targets are those of the serving runtime: the exported evaluation
(`edgetune.exporters.evaluate`) compares the runtime's logits with them position by
position. A tokenizer for which the two differ is refused before training, naming the row.

**Results.** `Result.spans` are the entities: BIO tags of the words joined into spans the
conlleval way (``I-X`` after ``O`` or another type starts a span), with character offsets in
code points (end exclusive), the type without ``B-``/``I-``, the mean score of its words and
its text. `Result.labels` names each entity type found, all selected, scored by its best
span, best first: a quick "does this text mention a place?" without reading spans. Texts
longer than the model's max_length tokens are cut there; words past it get no spans.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Encoding

from edgetune.errors import InvalidArgument
from edgetune.kit import (
    LabelIds,
    TokenizerRuntime,
    as_tokenizer,
    load_tokenizer,
    string_list,
    tokenizer_options,
)
from edgetune.plugins import hookimpl
from edgetune.task import (
    IGNORE_INDEX,
    Array,
    Collator,
    Encoded,
    Feature,
    Input,
    LabelScore,
    ModelFiles,
    Preprocessor,
    Result,
    Span,
    Task,
    TaskRuntime,
    Text,
    TrainableModel,
    label_head,
    softmax,
)

OUTSIDE = "O"

# ---- BIO tags and entities ------------------------------------------------------------


def entity_type(tag: str) -> str:
    """ "B-PER" and "I-PER" -> "PER"; a tag without a BIO prefix is its own type."""
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def inside_tag(tag: str) -> str:
    """The tag a later piece of a word takes: "B-PER" -> "I-PER"; "O" stays "O"."""
    return tag if tag == OUTSIDE else f"I-{entity_type(tag)}"


def entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """(type, first, end) word ranges of the entities in a tag sequence, end exclusive.

    As conlleval and seqeval's default mode: ``B-X`` starts an entity, ``I-X`` continues an
    open ``X`` and otherwise starts one, ``O`` ends it. Tags without a prefix act as ``I-``.
    """
    found: list[tuple[str, int, int]] = []
    open_type, first = "", 0
    for i, tag in enumerate([*tags, OUTSIDE]):
        kind = "" if tag == OUTSIDE else entity_type(tag)
        if open_type and (kind != open_type or tag.startswith("B-")):
            found.append((open_type, first, i))
            open_type = ""
        if kind and not open_type:
            open_type, first = kind, i
    return found


def entity_metrics(
    predicted: Sequence[Sequence[str]], actual: Sequence[Sequence[str]], types: Sequence[str]
) -> dict[str, float]:
    """Micro precision, recall and F1 of exact entity matches (type and word range) over
    sentences, plus "f1/<type>" for each type. No entities predicted or present gives 0."""
    hits: dict[str, int] = defaultdict(int)
    predicted_count: dict[str, int] = defaultdict(int)
    actual_count: dict[str, int] = defaultdict(int)
    for predicted_tags, actual_tags in zip(predicted, actual, strict=True):
        guessed, gold = set(entities(predicted_tags)), set(entities(actual_tags))
        for kind, _, _ in guessed:
            predicted_count[kind] += 1
        for kind, _, _ in gold:
            actual_count[kind] += 1
        for kind, _, _ in guessed & gold:
            hits[kind] += 1

    def scores(hit: int, guessed: int, gold: int) -> tuple[float, float, float]:
        precision = hit / guessed if guessed else 0.0
        recall = hit / gold if gold else 0.0
        both = precision + recall
        return precision, recall, (2 * precision * recall / both if both else 0.0)

    precision, recall, f1 = scores(
        sum(hits.values()), sum(predicted_count.values()), sum(actual_count.values())
    )
    metrics = {"precision": precision, "recall": recall, "f1": f1}
    for kind in types:
        metrics[f"f1/{kind}"] = scores(hits[kind], predicted_count[kind], actual_count[kind])[2]
    return metrics


# ---- serving ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Word:
    """A served word: its first token's position and its character range in the text."""

    token: int
    start: int
    end: int


def served_words(encoding: Encoding) -> list[Word]:
    """The words of an encoded text, as its tokenizer's pre-tokenizer split it."""
    words: list[Word] = []
    previous = None
    for position, (word_id, (start, end)) in enumerate(
        zip(encoding.word_ids, encoding.offsets, strict=True)
    ):
        if word_id is None:
            previous = None
        elif word_id == previous:
            words[-1] = Word(words[-1].token, words[-1].start, end)
        else:
            words.append(Word(position, start, end))
            previous = word_id
    return words


class TokenClassificationRuntime(TokenizerRuntime):
    """Tokenizes texts keeping offsets, tags each word by its first sub-token and joins the
    tagged words into entity spans. (Tokenizer set-up is the kit's.)"""

    def encode(self, inputs: Sequence[Input]) -> Encoded:
        """Tokenize the texts in one Rust batch call; the encodings travel to `decode`."""
        texts = [item for item in inputs if isinstance(item, Text)]
        feeds, encodings = self.tokenize(texts)
        return Encoded(feeds, state=[(t.text, e) for t, e in zip(texts, encodings, strict=True)])

    def decode(self, outputs: Sequence[Array], encoded: Encoded, top_k: int) -> list[Result]:
        """Spans from the per-token softmax; labels are the entity types found."""
        probs = softmax(outputs[0])
        best, best_score = probs.argmax(axis=-1), probs.max(axis=-1)
        results = []
        for row, (text, encoding) in enumerate(encoded.state):
            words = served_words(encoding)
            tags = [self.labels[best[row, w.token]] for w in words]
            scores = [float(best_score[row, w.token]) for w in words]
            spans = []
            for kind, first, end in entities(tags):
                start, stop = words[first].start, words[end - 1].end
                score = float(np.mean(scores[first:end]))
                spans.append(Span(start, stop, kind, score, text[start:stop]))
            results.append(Result(labels=_types_found(spans)[: top_k or None], spans=spans))
        return results


def _types_found(spans: Sequence[Span]) -> list[LabelScore]:
    best: dict[str, float] = {}
    for span in spans:
        best[span.label] = max(best.get(span.label, 0.0), span.score)
    ranked = sorted(best.items(), key=lambda item: -item[1])
    return [LabelScore(label, score, selected=True) for label, score in ranked]


# ---- the task ---------------------------------------------------------------------------


class TokenClassification(Task):
    """Named-entity style tagging of words with BIO tags; served as character spans."""

    name = "token-classification"
    description = "Tags each word of a text (BIO, e.g. B-PER); answers entity spans with offsets."
    input_kinds = (Text,)
    optimum_task = "token-classification"
    returns_spans = True

    selection_metric = "f1"
    gate_metric = "f1"
    """Entity F1, not token accuracy: most tokens are "O", so int8 could break entity
    boundaries while token accuracy hardly moves; spans are what clients read."""

    def example_labels(self, example: Mapping[str, Any], row: int) -> list[str]:
        """`tokens`: non-empty words without whitespace; `tags`: one BIO tag per word.
        Returns the row's distinct tags, sorted."""
        tokens = string_list(example, "tokens", row)
        tags = string_list(example, "tags", row)
        for i, token in enumerate(tokens):
            if any(c.isspace() for c in token):
                raise InvalidArgument(
                    f"row {row}: field 'tokens[{i}]' contains whitespace; give each word alone"
                )
        for i, tag in enumerate(tags):
            if tag != OUTSIDE and (tag[:2] not in ("B-", "I-") or not tag[2:].strip()):
                raise InvalidArgument(
                    f"row {row}: field 'tags[{i}]' = {tag!r} is not a BIO tag "
                    "(O, B-<type> or I-<type>)"
                )
        if len(tags) != len(tokens):
            raise InvalidArgument(
                f"row {row}: field 'tags' has {len(tags)} tags but 'tokens' has "
                f"{len(tokens)} words; give one tag per word"
            )
        return sorted(set(tags))

    def example_input(self, example: Mapping[str, Any]) -> Input:
        """The words joined with single spaces, as a client would send the sentence."""
        return Text(" ".join(example["tokens"]))

    def build_model(self, base: Path, labels: Sequence[str]) -> TrainableModel:
        """AutoModelForTokenClassification with a fresh head when the tag set differs."""
        from transformers import AutoModelForTokenClassification

        model: TrainableModel = AutoModelForTokenClassification.from_pretrained(
            base, **label_head(labels)
        )
        return model

    def load_preprocessor(self, base: Path) -> Preprocessor:
        """The base model's fast tokenizer (the kit's, which pads decoders with EOS).
        Byte-level BPE (GPT-2, RoBERTa) gets a prefix space, so that a text's first word
        tokenizes as the words after it (and as a word given alone); the setting is saved
        in the tokenizer.json that serving reads."""
        return load_tokenizer(base, add_prefix_space=True)

    def build_features(
        self,
        examples: Sequence[Mapping[str, Any]],
        preprocessor: Preprocessor,
        labels: Sequence[str],
        max_length: int,
    ) -> list[Feature]:
        """Token ids with a label on the first sub-token of each served word (see the
        module docstring), -100 elsewhere; the pre-split and the joined tokenization must
        agree."""
        index = LabelIds(labels, what="tag")
        for row, example in enumerate(examples, start=1):
            for tag in self.example_labels(example, row):
                index(tag, row)
        words = [list(e["tokens"]) for e in examples]
        preprocessor = as_tokenizer(preprocessor)
        split = preprocessor(
            words, is_split_into_words=True, truncation=True, max_length=max_length
        )
        joined = preprocessor([" ".join(w) for w in words], truncation=True, max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            if split["input_ids"][i] != joined["input_ids"][i]:
                raise InvalidArgument(
                    f"row {i + 1}: this model's tokenizer splits the words given apart "
                    "differently from the words joined with spaces, so served text would "
                    "not line up with training; check field 'tokens'"
                )
            targets = _targets(example["tags"], split.word_ids(i), joined.word_ids(i), index)
            features.append(
                {**{key: values[i] for key, values in split.items()}, "labels": targets}
            )
        return features

    def collate(self, preprocessor: Preprocessor) -> Collator:
        """Pads each batch to its longest example; padded targets are -100."""
        from transformers import DataCollatorForTokenClassification

        # The tokenizer load_preprocessor made; transformers types it as its own class.
        tokenizer: Any = preprocessor
        collator: Collator = DataCollatorForTokenClassification(
            tokenizer, label_pad_token_id=IGNORE_INDEX, return_tensors="pt"
        )
        return collator

    def compute_metrics(
        self, logits: Array, label_ids: Array, labels: Sequence[str]
    ) -> dict[str, float]:
        """Entity precision / recall / F1 (exact span match, micro), F1 per entity type,
        and token "accuracy" over the labelled positions.

        :param logits: (examples, positions, labels); may be wider than label_ids (the
            serving runtime pads a batch to its longest text), never narrower.
        :param label_ids: (examples, positions), -100 where nothing is scored.
        """
        logits, label_ids = np.asarray(logits), np.asarray(label_ids)
        extra = logits.shape[1] - label_ids.shape[1]
        if extra < 0:
            raise ValueError(
                f"logits cover {logits.shape[1]} positions but targets {label_ids.shape[1]}"
            )
        label_ids = np.pad(label_ids, ((0, 0), (0, extra)), constant_values=IGNORE_INDEX)
        predicted = logits.argmax(axis=-1)
        scored = label_ids != IGNORE_INDEX
        actual_tags = [
            [labels[j] for j in row[keep]] for row, keep in zip(label_ids, scored, strict=True)
        ]
        predicted_tags = [
            [labels[j] for j in row[keep]] for row, keep in zip(predicted, scored, strict=True)
        ]
        types = sorted({entity_type(t) for t in labels if t != OUTSIDE})
        metrics = entity_metrics(predicted_tags, actual_tags, types)
        total = int(scored.sum())
        metrics["accuracy"] = (
            float((predicted[scored] == label_ids[scored]).sum() / total) if total else 0.0
        )
        return metrics

    def task_options(
        self, model: TrainableModel, preprocessor: Preprocessor, max_length: int | None = None
    ) -> dict[str, Any]:
        """Max sequence length and pad token for the serving tokenizer."""
        return tokenizer_options(model, as_tokenizer(preprocessor), max_length)

    def runtime(self, model: ModelFiles) -> TaskRuntime:
        """A runtime bound to this version's tokenizer and tags."""
        return TokenClassificationRuntime(model)

    def warmup_inputs(self) -> list[Input]:
        """A short text and a longer one, so both shapes are compiled."""
        return [Text("warm up"), Text("Ada Lovelace met Charles Babbage in London.")]


def _targets(
    tags: Sequence[str],
    given_ids: Sequence[int | None],
    served_ids: Sequence[int | None],
    index: LabelIds,
) -> list[int]:
    """Label ids per token: the first token of each served word is labelled with the tag of
    the given word it belongs to (its ``I-`` form past that word's first piece). The ids
    are each token's word index, given (pre-split) and served (joined text)."""
    targets = []
    previous_given: int | None = None
    previous_served: int | None = None
    for given, served in zip(given_ids, served_ids, strict=True):
        target = IGNORE_INDEX
        if given is not None and served is not None and served != previous_served:
            tag = tags[given] if given != previous_given else inside_tag(tags[given])
            target = index.get(tag, IGNORE_INDEX)
        targets.append(target)
        previous_given, previous_served = given, served
    return targets


@hookimpl
def edgetune_register_tasks(register: Callable[[Task], None]) -> None:
    """Register the token-classification task."""
    register(TokenClassification())
