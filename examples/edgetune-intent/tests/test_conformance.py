"""The edgetune conformance kit, run against this plugin as installed (found by entry point)."""

from __future__ import annotations

import random
from pathlib import Path

from edgetune.conformance import TaskConformance, build_tiny_bert
from edgetune.v1 import inference_pb2 as pb

INTENTS = {
    "book_flight": ["book", "flight", "ticket", "fly"],
    "weather": ["weather", "rain", "sunny", "forecast"],
    "play_music": ["play", "song", "music", "album"],
}
FILLER = ["please", "can", "you", "the", "a", "me", "now", "today", "for", "to"]
WORDS = FILLER + [w for words in INTENTS.values() for w in words]


def utterances(count: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    names = sorted(INTENTS)
    rows = []
    for i in range(count):
        intent = names[i % len(names)]
        words = [*rng.sample(FILLER, 3), *rng.sample(INTENTS[intent], 2)]
        rng.shuffle(words)
        rows.append({"utterance": " ".join(words), "intent": intent})
    return rows


class TestIntentDetection(TaskConformance):
    task_name = "intent-detection"
    train_rows = tuple(utterances(60, seed=0))
    serving_inputs = tuple(pb.Input(text=row["utterance"]) for row in utterances(6, seed=1))
    bad_rows = (
        ({"intent": "weather"}, "field 'utterance' is missing"),
        ({"utterance": "  ", "intent": "weather"}, "field 'utterance' is empty"),
        ({"utterance": "play a song", "intent": "Play Music"}, "snake_case"),
        ({"utterance": "word " * 65, "intent": "weather"}, "more than 64 words"),
    )
    bad_inputs = (
        (pb.Input(text="   "), "inputs[0].text is empty"),
        (pb.Input(text_pair=pb.TextPair(text="a", text_pair="b")), "does not take text_pair"),
    )

    def build_base(self, folder: Path) -> None:
        build_tiny_bert(folder, sorted(INTENTS), WORDS)
