"""Test data and fake third-party plugin distributions (laid out the way pip would)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import select
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgetune.serving.batcher import Batcher

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


POSITIVE = ["good", "great", "fun", "love"]
NEGATIVE = ["bad", "terrible", "boring", "hate"]
FILLER = ["the", "movie", "was", "film", "plot", "acting", "this", "it", "very"]


def sentiment_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Texts whose label is given by a sentiment word among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 else "negative"
        words = [*rng.sample(FILLER, 4), rng.choice(POSITIVE if i % 2 else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return rows


def jsonl(rows: list[dict[str, str]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def alive(pid: int) -> bool:
    """Whether pid is a live process (a zombie counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return "State:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def wait_gone(pid: int, timeout: float = 20.0) -> bool:
    """Wait until pid has exited; False if it is still alive after timeout.

    Waits on a pidfd, readable once the process has exited (a zombie counts as gone); it
    works for a process that is not this one's child, such as the training process of a
    server a test started. Without pidfds (an old kernel, a sandbox that refuses them) it
    polls `alive` until the deadline: a separate process with no event to wait on."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    except (AttributeError, OSError):
        deadline = time.monotonic() + timeout
        while alive(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)  # a process-level poll with a deadline (see above)
        return True
    try:
        readable, _, _ = select.select([pidfd], [], [], timeout)
    finally:
        os.close(pidfd)
    return bool(readable)


def scrape_metrics(port: int) -> dict[str, list[Any]]:
    """Samples of every metric family on a server's Prometheus /metrics, by family name."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def publish_copy(
    repository: Any,
    source: Any,
    name: str,
    change: Callable[[Path], None] | None = None,
    **manifest: Any,
) -> Any:
    """Publish a copy of the version `source` as model `name` (its files, its manifest with
    `manifest` fields replaced), after `change(staged_folder)` when given."""
    import shutil

    with repository.staging() as staged:
        for item in source.path.iterdir():
            if item.is_file() and item.name != "manifest.json":
                shutil.copy2(item, staged / item.name)
        if change is not None:
            change(staged)
        return repository.publish(name, staged, source.manifest.model_copy(update=manifest))


class WatchedBatcher:
    """Wraps a model's batcher's `submit` (the server's call into it): counts the requests
    submitted and the callers that gave up waiting (the server cancelled their handler: a
    client's cancel or an expired deadline), with an event for each change to wait on."""

    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.submitted = 0
        self.gave_up = 0
        self._changed = asyncio.Event()
        submit = batcher.submit

        async def watched(inputs, top_k):
            waiting = submit(inputs, top_k)
            # Counted just before submit runs, but a task waiting on the count resumes on a
            # later pass of the loop: after this one has run submit to its first await, so
            # after it put the request in the queue.
            self.submitted += 1
            self._changed.set()
            try:
                return await waiting
            except asyncio.CancelledError:
                self.gave_up += 1
                self._changed.set()
                raise

        batcher.submit = watched  # type: ignore[method-assign]

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Wait until condition() holds, woken by each count change (fails after 30 s)."""
        try:
            async with asyncio.timeout(30):
                while not condition():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"the server never {what}") from None
