"""The README documents every setting, and its commands are the ones CI runs."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

from edgetune.settings import FIELD_GROUPS, GROUPS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_every_setting_is_documented() -> None:
    names = ["home", *FIELD_GROUPS]
    assert len(names) > 40
    missing = [f"EDGETUNE_{n.upper()}" for n in names if f"`EDGETUNE_{n.upper()}`" not in README]
    assert not missing, f"README lacks {missing}"
    documented = field_docstrings()
    undocumented = [name for name in names if not documented.get(name)]
    assert not undocumented, f"settings without a docstring: {undocumented}"


def field_docstrings() -> dict[str, str]:
    """The docstring under each field of Settings and of its groups, read from the source."""
    tree = ast.parse((ROOT / "src" / "edgetune" / "settings.py").read_text())
    classes = {"Settings", *(group.__name__ for group in GROUPS.values())}
    docs = {}
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name in classes):
            continue
        for field, after in itertools.pairwise(node.body):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[field.target.id] = after.value.value
    return docs


def test_readme_first_screen_has_the_run_and_test_commands() -> None:
    first_screen = "\n".join(README.splitlines()[:15])
    assert "scripts/demo.sh" in first_screen
    assert "scripts/test.sh" in first_screen
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_every_hook_is_documented_in_the_plugin_guide() -> None:
    from edgetune.plugins import hookspecs

    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("edgetune_")]
    assert hooks, "no hookspecs found"
    missing = [name for name in hooks if f"### `{name}(" not in guide]
    assert not missing, f"docs/plugins.md lacks {missing}"


def test_every_task_method_is_named_in_the_plugin_guide() -> None:
    from edgetune.task import Task

    guide = (ROOT / "docs" / "plugins.md").read_text()
    methods = [name for name in vars(Task) if not name.startswith("_")]
    missing = [name for name in methods if f"`{name}" not in guide]
    assert not missing, f"docs/plugins.md lacks {missing}"


def test_the_architecture_guide_names_every_module() -> None:
    guide = (ROOT / "docs" / "architecture.md").read_text()
    modules = [
        str(path.relative_to(ROOT / "src" / "edgetune"))
        for path in sorted((ROOT / "src" / "edgetune").rglob("*.py"))
        if path.name != "__init__.py" and "_pb2" not in path.name
    ]
    missing = [module for module in modules if module not in guide]
    assert not missing, f"docs/architecture.md lacks {missing}"


def test_the_docs_stand_alone() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        assert "../shared" not in text and "DESIGN.md" not in text, path
