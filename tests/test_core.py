"""The core never names a task: every task comes through the plugin hooks."""

from __future__ import annotations

from pathlib import Path

from edgetune.plugins.manager import build_plugins

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "edgetune"
PLUGINS = PACKAGE / "plugins"
KIT = PACKAGE / "kit"
"""The plugins' side: the task kit names Optimum's "text-classification" export task for
its sequence-classifier bases, and the core never imports it (tests/plugins/test_kit.py)."""


def test_no_core_module_names_a_task() -> None:
    tasks = sorted(build_plugins(autoload=False).tasks)
    assert len(tasks) >= 4  # the built-in tasks are registered
    core = [p for p in PACKAGE.rglob("*.py") if PLUGINS not in p.parents and KIT not in p.parents]
    assert len(core) > 20
    offenders = [
        f"{path.relative_to(PACKAGE)} names {task!r}"
        for path in core
        for task in tasks
        if task in path.read_text()
    ]
    assert not offenders, offenders
