"""Fake third-party plugin distributions, installed the way pip would lay them out."""

from __future__ import annotations

import textwrap
from pathlib import Path

SENTIMENT_PLUGIN = """
import edgetune
from edgetune.plugins.text_classification import TextClassification


class Sentiment(TextClassification):
    name = "fake-sentiment"
    description = "A third-party task that reuses the text classifier."


@edgetune.hookimpl
def edgetune_register_tasks(register):
    register(Sentiment())
"""


def install_distribution(
    site: Path, dist: str, version: str, modules: dict[str, str], entry_points: dict[str, str]
) -> None:
    """Write modules and a .dist-info (as pip would) into a folder that is on sys.path."""
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "\n".join(f"{name} = {target}" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[edgetune]\n{lines}\n")
