"""The sentence-classification model: a sentence encoder, mean pooling, L2 normalisation
and a cosine head in one torch module, so that Optimum exports all of it as ONE ONNX graph
(with the standard BERT export config and a `logits` output) and serving is the text
runtime unchanged.

The head's rows start as the normalised embeddings of the label texts ("name: description",
or the name in a template) divided by a temperature: with no training at all the model is a
zero-shot classifier (softmax over cosine similarities / temperature). A fine-tuning job
first sets the head from its training rows: when some label has fewer than FEW_SHOT_ROWS
(few-shot) a contrastive stage on pairs of the rows (`contrast`) and a logistic-regression
head on their embeddings (`fit_head`), otherwise each label's prototype, their mean
embedding (`set_prototypes`); then it trains with cross-entropy: the head only when
few-shot, encoder and head end to end otherwise.

Imports torch and transformers at import time: the sentence-classification task imports
this module inside its training-side methods only.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from edgetune.errors import InvalidArgument

MARKER = "edgetune_sentence_head"
"""config.json flag of a saved SentenceClassifier, so a later build reloads it as one."""
DEFAULT_TEMPERATURE = 0.05
"""Cosine similarities are in [-1, 1]; dividing by 0.05 spreads them over [-20, 20], so the
softmax of a zero-shot model is decisive and cross-entropy training starts from a sensible
scale (SetFit's and CLIP's cosine heads use similar scales)."""
FEW_SHOT_ROWS = 16
"""Below this many training rows for some label (few-shot), a job trains the head only;
from it on, encoder and head end to end. Cross-entropy fine-tuning of the encoder on a
handful of rows per label overfits and loses accuracy the head had (BBC, 8 rows per label,
300 held-out articles: prototypes alone 0.957; then end to end, 2 epochs at lr 1e-5 0.933,
4 at 2e-5 0.950, 4 at 5e-5 0.943), and SetFit too trains only a head after its
contrastive stage."""
DEFAULT_MAX_SEQ_LENGTH = 256
"""Tokens per input when the base's sentence_bert_config.json names none (MiniLM's)."""


def normalized_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token states over the real tokens (mask 1), L2-normalised, as
    sentence-transformers' Pooling(mean) + Normalize compute it."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * weights).sum(dim=1)
    pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(pooled, p=2.0, dim=-1)


class SentenceClassifier(BertPreTrainedModel):  # type: ignore[no-untyped-call]
    """A BERT sentence encoder with mean pooling, normalisation and a linear head over the
    normalised embedding; `logits` per label, cross-entropy `loss` when labels are given."""

    # BERT checkpoints carry a pooler mean pooling replaces; not a missing weight.
    _keys_to_ignore_on_load_unexpected = [r"pooler"]  # type: ignore[assignment]  # noqa: RUF012

    def __init__(self, config: Any) -> None:
        """An encoder without BERT's pooler (mean pooling replaces it) and a bias-free head."""
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)  # type: ignore[no-untyped-call]
        self.head = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()  # type: ignore[no-untyped-call]
        self.freeze_encoder(bool(getattr(config, "freeze_encoder", False)))

    def freeze_encoder(self, frozen: bool) -> None:
        """Train the head only (frozen) or encoder and head; kept in the config, so that a
        checkpoint reloaded to resume a job trains as the job began."""
        self.config.freeze_encoder = frozen
        for parameter in self.bert.parameters():
            parameter.requires_grad_(not frozen)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The normalised sentence embedding of each row of the batch."""
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        return normalized_mean(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **_: Any,
    ) -> SequenceClassifierOutput:
        """Logits = head(normalised mean embedding); loss = cross-entropy with labels."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        logits = self.head(self.embed(input_ids, attention_mask, token_type_ids))
        loss: Any = None if labels is None else nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


# Optimum's onnx_export_from_model (2.1) has no library argument: it infers the library
# from the model class's module name and refuses any module outside transformers, diffusers,
# timm and sentence_transformers. The class is a transformers PreTrainedModel exported with
# transformers' BERT config, so it is named as one for that check; nothing imports by it.
SentenceClassifier.__module__ = "transformers.edgetune_sentence_classifier"


# ---- building one ----------------------------------------------------------------------


def read_json(path: Path, field: str) -> Any:
    """A JSON file of the base; InvalidArgument naming the field when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{field}: cannot read {path.name}: {exc}") from None


def check_mean_pooling(base: Path) -> None:
    """The base must be a sentence-transformers folder that mean-pools (its Pooling module's
    config): the head is trained against, and zero-shot compares, mean-pooled embeddings."""
    pooling = "1_Pooling"
    if (base / "modules.json").is_file():
        modules = read_json(base / "modules.json", "base")
        paths = [
            m.get("path", "")
            for m in modules
            if isinstance(m, dict) and str(m.get("type", "")).endswith("Pooling")
        ]
        pooling = paths[0] if paths else pooling
    config_file = base / pooling / "config.json"
    if not config_file.is_file():
        raise InvalidArgument(
            f"base: {base.name} has no pooling config ({pooling}/config.json); this task "
            "needs a sentence-transformers encoder with mean pooling"
        )
    config = read_json(config_file, "base")
    modes = sorted(
        k.removeprefix("pooling_mode_")
        for k, v in config.items()
        if k.startswith("pooling_mode_") and v
    )
    if modes != ["mean_tokens"]:
        raise InvalidArgument(
            f"base: {base.name} pools with {', '.join(modes) or 'nothing'}; this task "
            "needs mean pooling (pooling_mode_mean_tokens only)"
        )


def max_seq_length(base: Path) -> int:
    """The sequence length the encoder was trained for (sentence_bert_config.json)."""
    if (base / "sentence_bert_config.json").is_file():
        found = read_json(base / "sentence_bert_config.json", "base").get("max_seq_length")
        if isinstance(found, int) and found > 0:
            return found
    return DEFAULT_MAX_SEQ_LENGTH


@torch.no_grad()
def embed_texts(
    model: SentenceClassifier, tokenizer: Any, texts: Sequence[str], max_length: int
) -> torch.Tensor:
    """Normalised embeddings of texts (batches of 32), in eval mode (no dropout)."""
    was_training = model.training
    model.eval()  # type: ignore[no-untyped-call]
    rows = []
    for start in range(0, len(texts), 32):
        batch = tokenizer(
            list(texts[start : start + 32]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        rows.append(model.embed(**batch))
    model.train(was_training)
    return torch.cat(rows)


LABEL_TEMPLATE = "This example is {}."
"""What a label without a description stands for: a bare name ("tech") embeds as a word,
not as a text about it, and texts are compared with texts. This is transformers'
zero-shot-classification pipeline's default hypothesis template, taken as it is (not
tuned on any benchmark)."""


def label_text(label: str, description: str) -> str:
    """What a label's head row is the embedding of: "label: description", or the label
    in LABEL_TEMPLATE."""
    return f"{label}: {description}" if description else LABEL_TEMPLATE.format(label)


def build(
    base: Path,
    labels: Sequence[str],
    descriptions: Mapping[str, str],
    tokenizer: Callable[[Path], Any],
) -> Any:
    """A SentenceClassifier for labels from a base encoder or a saved SentenceClassifier.

    The model is typed Any (transformers' config attributes are dynamic). A saved one
    with the same labels and no new descriptions comes back as it is (a later
    fine-tune continues from it). Otherwise the head is rebuilt: a label the saved model
    had and that gets no new description keeps its row (trained or described before), every
    other label's row is the embedding of its text / temperature.

    :param tokenizer: loads the base's tokenizer, called only when a label is embedded
        (a job's checkpoints hold the model's weights and no tokenizer).
    """
    config = read_json(base / "config.json", "base")
    if config.get(MARKER):
        model: Any = SentenceClassifier.from_pretrained(base, use_safetensors=True)
        old = {str(label): i for i, label in model.config.id2label.items()}
        if list(old) == list(labels) and not descriptions:
            return model
    else:
        check_mean_pooling(base)
        model = SentenceClassifier.from_pretrained(
            base, num_labels=len(labels), use_safetensors=True
        )
        model.config.update(
            {
                MARKER: True,
                "head_temperature": DEFAULT_TEMPERATURE,
                "max_seq_length": max_seq_length(base),
                "label_texts": {},
            }
        )
        old = {}
    known = dict(model.config.label_texts)
    texts = {
        label: label_text(label, descriptions.get(label, ""))
        if label in descriptions or label not in known
        else known[label]
        for label in labels
    }
    fresh = [label for label in labels if label in descriptions or label not in old]
    weight = torch.zeros(len(labels), model.config.hidden_size)
    if fresh:
        embedded = embed_texts(
            model, tokenizer(base), [texts[label] for label in fresh], model.config.max_seq_length
        )
        for label, row in zip(fresh, embedded, strict=True):
            weight[labels.index(label)] = row / model.config.head_temperature
    for i, label in enumerate(labels):
        if label not in fresh:
            weight[i] = model.head.weight.data[old[label]]
    model.head = nn.Linear(model.config.hidden_size, len(labels), bias=False)
    model.head.weight.data.copy_(weight)
    model.config.update(
        {
            "num_labels": len(labels),
            "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)},
            "label_texts": texts,
        }
    )
    model.config.architectures = ["SentenceClassifier"]
    return model


CONTRASTIVE_STEPS = 5
"""Optimizer steps of the few-shot contrastive stage (see `contrast`)."""
CONTRASTIVE_LR = 5e-5
"""Its learning rate (1e-4 measured the same within noise; see `contrast`)."""
CONTRASTIVE_TOKENS = 128
"""Tokens per row in the contrastive stage: its cost is the encoder's forward and backward
pass over every row each step, and the first 128 tokens carry most of what sets a row
apart (BBC, 8 articles a label: 256 tokens took 4x as long for no gain on seed 0)."""
CONTRASTIVE_ROWS = 64
"""Rows a contrastive step embeds at most (drawn afresh each step when there are more)."""


def contrast(model: Any, batch: Mapping[str, torch.Tensor]) -> None:
    """SetFit's contrastive stage, on every pair of rows at once: each step embeds the
    rows (at most CONTRASTIVE_ROWS, cut to CONTRASTIVE_TOKENS) and moves the encoder so
    that the cosine similarity of two rows is 1 when they share a label and 0 when they do
    not (SetFit's CosineSimilarityLoss; positive and negative pairs weigh the same, as
    SetFit samples them evenly). SetFit draws pairs one by one and embeds each row many
    times; here one forward pass over the rows scores all their pairs, so a handful of
    steps does the work (BBC, 8 articles per label, 600 held-out articles, frozen MiniLM
    prototypes 0.931 mean of seeds 0-2; after 5 steps at 5e-5 0.944, at 1e-4 0.942).

    Does nothing without a positive and a negative pair.
    """
    targets = batch["labels"]
    lengths = batch["attention_mask"].sum(dim=1)
    inputs = {k: v[:, :CONTRASTIVE_TOKENS].clone() for k, v in batch.items() if k != "labels"}
    cut = lengths > CONTRASTIVE_TOKENS  # rows cut short end with their separator again
    rows = torch.arange(len(targets))
    inputs["input_ids"][cut, -1] = batch["input_ids"][rows[cut], lengths[cut] - 1]
    same = targets[:, None] == targets[None, :]
    upper = torch.triu(torch.ones_like(same), diagonal=1)  # each pair once
    if not bool((same & upper).any()) or not bool((~same & upper).any()):
        return
    was_training = model.training
    model.train()
    encoder = list(model.bert.parameters())
    for parameter in encoder:
        parameter.requires_grad_(True)
    optimizer = torch.optim.AdamW(encoder, lr=CONTRASTIVE_LR, weight_decay=0.0)
    for _ in range(CONTRASTIVE_STEPS):
        picked = torch.randperm(len(targets))[:CONTRASTIVE_ROWS]
        embedded = model.embed(**{k: v[picked] for k, v in inputs.items()})
        similarity = embedded @ embedded.T
        pair, alike = upper[picked][:, picked], same[picked][:, picked]
        positive, negative = alike & pair, ~alike & pair
        if not bool(positive.any()) or not bool(negative.any()):
            continue
        loss = (
            0.5 * ((similarity[positive] - 1) ** 2).mean()
            + 0.5 * (similarity[negative] ** 2).mean()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.train(was_training)


@torch.no_grad()
def embed_rows(
    model: Any, batches: Iterable[Mapping[str, torch.Tensor]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalised embeddings, label ids) of the training rows, in eval mode."""
    was_training = model.training
    model.eval()
    embedded, targets = [], []
    for batch in batches:
        targets.append(batch["labels"])
        embedded.append(model.embed(**{k: v for k, v in batch.items() if k != "labels"}))
    model.train(was_training)
    return torch.cat(embedded), torch.cat(targets)


@torch.no_grad()
def set_prototypes(model: Any, embedded: torch.Tensor, targets: torch.Tensor) -> None:
    """Each head row of a label with rows becomes that label's prototype: the normalised
    sum of its rows' embeddings and of its current row's direction (the label text as one
    more example), over the temperature (a nearest-centroid classifier in the encoder's
    space). Labels without rows keep their row.
    """
    sums = torch.zeros_like(model.head.weight)
    sums.index_add_(0, targets, embedded)
    counts = torch.bincount(targets, minlength=sums.shape[0])
    seen = counts > 0
    # The row the label had (its label text's embedding, or a trained row) counts as one
    # more example: a prior that matters with a handful of rows and fades with many
    # (BBC, 8 rows per label, all 1,425 held-out articles, frozen MiniLM: prototypes
    # alone 0.922 / 0.890 / 0.918 for seeds 0-2, with the label text as one row 0.933 /
    # 0.900 / 0.927).
    prior = nn.functional.normalize(model.head.weight.data, p=2.0, dim=-1)
    prototypes = nn.functional.normalize((sums + prior)[seen], p=2.0, dim=-1)
    model.head.weight.data[seen] = prototypes / model.config.head_temperature


HEAD_C = 10.0
"""Inverse L2 strength of the few-shot head's logistic regression (scikit-learn's C). BBC,
8 articles a label (all 40 rows), after the contrastive stage, fp32, mean of seeds 0-2 on
the 1,425 held-out articles: C=10 0.936, C=1 0.935; without the label texts as rows 0.933
and 0.932; the prototypes 0.930. 10 also gives the served scores a decisive scale."""


@torch.no_grad()
def fit_head(model: Any, embedded: torch.Tensor, targets: torch.Tensor) -> None:
    """The few-shot head, as SetFit's: a multinomial logistic regression (scikit-learn,
    L2, no intercept: the head has no bias) on the normalised embeddings of the rows, each
    label's current row direction (its label text, or a trained row) counted as one more
    row, so that a label without rows has one and every row has the same scale. It beat
    the prototypes after the contrastive stage (see HEAD_C)."""
    from sklearn.linear_model import LogisticRegression

    prior = nn.functional.normalize(model.head.weight.data, p=2.0, dim=-1)
    features = torch.cat([embedded, prior]).double().numpy()
    labels = torch.cat([targets, torch.arange(prior.shape[0])]).numpy()
    fitted = LogisticRegression(C=HEAD_C, fit_intercept=False, max_iter=1_000)
    coef = torch.from_numpy(fitted.fit(features, labels).coef_).to(prior.dtype)
    if coef.shape[0] == 1:  # two labels: one weight vector w, softmax([-w/2, w/2]) is the same
        coef = torch.cat([-coef / 2, coef / 2])
    model.head.weight.data.copy_(coef)
