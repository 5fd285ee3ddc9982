"""The edgetune conformance kit, run against this plugin as installed (found by entry point)."""

from __future__ import annotations

import random
from pathlib import Path

from edgetune.conformance import TaskConformance, build_tiny_bert
from edgetune.v1 import inference_pb2 as pb

WORDS = ["cat", "dog", "bird", "fish", "red", "blue", "green", "big", "small", "old", "new"]
WORDS += ["runs", "sleeps", "eats", "sings", "the", "a", "and", "very", "here", "there"]


def pairs(count: int, seed: int) -> list[dict[str, object]]:
    """Pairs of five-word texts; the score is the share of words they have in common (their
    Jaccard similarity), so that a model can learn it from the tokens."""
    rng = random.Random(seed)
    rows: list[dict[str, object]] = []
    for i in range(count):
        first = rng.sample(WORDS, 5)
        kept = i % 6  # 0..5 words shared: every band occurs
        second = first[:kept] + rng.sample([w for w in WORDS if w not in first], 5 - kept)
        shared = len(set(first) & set(second)) / len(set(first) | set(second))
        rng.shuffle(second)
        rows.append({"text": " ".join(first), "text_pair": " ".join(second), "score": shared})
    return rows


class TestTextSimilarity(TaskConformance):
    task_name = "text-similarity"
    train_rows = tuple(pairs(72, seed=0))
    serving_inputs = tuple(
        pb.Input(text_pair=pb.TextPair(text=str(row["text"]), text_pair=str(row["text_pair"])))
        for row in pairs(6, seed=1)
    )
    bad_rows = (
        ({"text": "a cat", "score": 0.5}, "field 'text_pair' is missing"),
        (
            {"text": "a cat", "text_pair": "a dog", "score": 1.5},
            "'score' must be a number from 0 to 1",
        ),
        ({"text": "a cat", "text_pair": "a dog", "score": "high"}, "'score' must be a number"),
        ({"text": "a cat", "text_pair": "a dog", "score": True}, "'score' must be a number"),
    )
    bad_inputs = (
        (pb.Input(text="a cat"), "does not take text input"),
        (
            pb.Input(text_pair=pb.TextPair(text="a cat", text_pair=" ")),
            "text_pair.text_pair is empty",
        ),
    )

    def build_base(self, folder: Path) -> None:
        build_tiny_bert(folder, ["score"], WORDS)
