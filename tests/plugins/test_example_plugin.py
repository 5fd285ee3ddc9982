"""The example third-party task plugins (examples/edgetune-intent, a text classifier with its
own rows, and examples/edgetune-similarity, a new task on the task kit), each in its own
distribution, pip-installed into a scratch environment: discovered, listed, passes the
conformance kit (fine-tune, export, serve), and gone again once uninstalled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def scratch_environment(folder: Path) -> Path:
    """A fresh virtual environment that sees this one's packages (edgetune, its
    dependencies, pip and setuptools) through a .pth file, so pip installs and uninstalls
    only the plugin there."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    python = folder / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # `import` lines in a .pth run at start-up; addsitedir also reads ours' .pth files
    # (the editable install of edgetune is one).
    Path(site_packages, "edgetune-host.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    return python


def run(python: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETUNE_")}
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=540
    )


@pytest.mark.parametrize(
    ("distribution", "task"),
    [("edgetune-intent", "intent-detection"), ("edgetune-similarity", "text-similarity")],
)
def test_the_example_plugin_installs_passes_the_kit_and_uninstalls(
    tmp_path: Path, distribution: str, task: str
) -> None:
    python = scratch_environment(tmp_path / "venv")
    # A copy: builds leave files in the source tree.
    source = shutil.copytree(EXAMPLES / distribution, tmp_path / distribution)
    before = run(python, "-m", "edgetune", "plugins")
    assert before.returncode == 0, before.stderr
    assert task not in before.stdout

    installed = run(
        python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q", str(source)
    )
    assert installed.returncode == 0, installed.stderr
    listed = run(python, "-m", "edgetune", "plugins")
    assert listed.returncode == 0, listed.stderr
    assert f"{distribution} 0.1.0" in listed.stdout, listed.stdout
    assert f"task {task}" in listed.stdout

    # The kit runs from a folder outside both source trees, against the installed plugin.
    kit = run(
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(source),
        str(source / "tests"),
        cwd=tmp_path,
    )
    assert kit.returncode == 0, kit.stdout[-4000:] + kit.stderr[-2000:]
    assert "7 passed" in kit.stdout, kit.stdout[-2000:]

    removed = run(python, "-m", "pip", "uninstall", "-y", "-q", distribution)
    assert removed.returncode == 0, removed.stderr
    after = run(python, "-m", "edgetune", "plugins")
    assert after.returncode == 0, after.stderr
    assert task not in after.stdout
