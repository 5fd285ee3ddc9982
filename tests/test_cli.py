"""The `edgetune` command end to end: import-model, serve, predict, models, plugins."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fakes import sentiment_rows

from edgetune.client import free_port, wait_until_serving

EDGETUNE = [sys.executable, "-m", "edgetune"]


def run(
    *args: str, env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EDGETUNE, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "EDGETUNE_HOME": str(tmp_path / "home"),
        "EDGETUNE_DISABLE_PLUGIN_AUTOLOAD": "1",
    }


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`edgetune serve` in a child process; yields its address once health says SERVING."""
    with serving(env) as server:
        yield server


@contextmanager
def serving(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`edgetune serve` with env until the block ends."""
    address = f"127.0.0.1:{free_port()}"
    host, port = address.split(":")
    proc = subprocess.Popen(
        [*EDGETUNE, "serve", "--host", host, "--port", port],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_until_serving(address, timeout=60, process=proc)
        yield address, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_import_serve_predict_and_models(env, served, tiny_bert, tmp_path) -> None:
    address, _ = served
    imported = run(
        "import-model",
        "--name",
        "reviews",
        "--task",
        "text-classification",
        str(tiny_bert),
        env=env,
    )
    assert imported.returncode == 0, imported.stderr
    assert "imported reviews version 1" in imported.stdout
    assert "labels: negative, neutral, positive" in imported.stdout

    # Imported while the server runs: served on its first request.
    plain = run(
        "predict", "--address", address, "--model", "reviews", "good fun", "bad plot", env=env
    )
    assert plain.returncode == 0, plain.stderr
    lines = plain.stdout.splitlines()
    assert len(lines) == 2
    label, score = lines[0].split("\t")
    assert label in {"negative", "neutral", "positive"} and 0 < float(score) <= 1

    piped = run(
        "predict",
        "--address",
        address,
        "--model",
        "reviews",
        "--json",
        "-",
        env=env,
        stdin="good fun\n\nbad plot\n",
    )
    rows = [json.loads(line) for line in piped.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["good fun", "bad plot"]
    assert set(rows[0]["scores"]) == {"negative", "neutral", "positive"}
    assert rows[0]["label"] == label and rows[0]["version"] == "1"
    assert sum(rows[0]["scores"].values()) == pytest.approx(1, abs=1e-4)

    listed = run("models", "list", "--address", address, env=env)
    assert "server ready; model_control=all" in listed.stdout
    assert "reviews" in listed.stdout and "ready" in listed.stdout and "MiB" in listed.stdout
    unloaded = run("models", "unload", "reviews", "--address", address, env=env)
    assert "unloaded reviews version 1" in unloaded.stdout
    loaded = run("models", "load", "reviews", "--address", address, env=env)
    assert "loaded reviews version 1 on CPUExecutionProvider" in loaded.stdout

    missing = run("predict", "--address", address, "--model", "nope", "x", env=env)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: NOT_FOUND: model 'nope' not found"

    # Any number of lines: 1,000 through stdin, one too long for the server (the limit is
    # 32,768 bytes): every other line is answered, in order, and the bad one is named.
    texts = [f"{'good fun' if i % 2 else 'bad plot'} {i}" for i in range(1, 1001)]
    texts[499] = "x" * 40_000
    many = run(
        "predict", "--address", address, "--model", "reviews", "--json", "-",
        env=env, stdin="\n".join(texts) + "\n",
    )  # fmt: skip
    assert many.returncode == 1
    rows = [json.loads(line) for line in many.stdout.splitlines()]
    assert [r["line"] for r in rows] == list(range(1, 1001))
    assert [r.get("text") for r in rows[:499]] == texts[:499]
    assert rows[499]["error"]["code"] == "INVALID_ARGUMENT"
    assert "is 40000 bytes; the limit is 32768" in rows[499]["error"]["message"]
    assert [r["text"] for r in rows[500:]] == texts[500:]
    assert "line 500: INVALID_ARGUMENT:" in many.stderr
    assert "1 of 1000 inputs failed" in many.stderr

    listing = tmp_path / "texts.txt"
    listing.write_text("\n".join(texts[:100]) + "\n")
    from_file = run(
        "predict", "--address", address, "--model", "reviews", "--input", str(listing), env=env
    )
    assert from_file.returncode == 0, from_file.stderr
    assert len(from_file.stdout.splitlines()) == 100


def test_finetune_and_jobs_commands(env, served, tiny_bert, tmp_path) -> None:
    address, _ = served
    data = tmp_path / "train.csv"
    data.write_text(
        "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in sentiment_rows(40))
    )
    tuned = run(
        "finetune",
        "--address",
        address,
        "--base",
        str(tiny_bert),
        "--task",
        "text-classification",
        "--data",
        str(data),
        "--name",
        "cli-model",
        "--epochs",
        "1",
        "--learning-rate",
        "0.003",
        "--max-length",
        "16",
        env=env,
    )
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "uploaded train.csv: 40 rows (negative 20, positive 20)" in tuned.stdout
    assert "succeeded" in tuned.stdout and "cli-model version 1" in tuned.stdout
    assert "accuracy" in tuned.stdout and "confusion matrix" in tuned.stdout
    assert "promoted: yes" in tuned.stdout
    job_id = tuned.stdout.split("job ", 1)[1].split(":", 1)[0]

    listed = run("jobs", "list", "--address", address, "--state", "succeeded", env=env)
    assert job_id in listed.stdout and "cli-model" in listed.stdout
    shown = run("jobs", "show", job_id, "--address", address, env=env)
    assert f"job {job_id}: succeeded" in shown.stdout
    cancelled = run("jobs", "cancel", job_id, "--address", address, env=env)
    assert cancelled.returncode == 1
    assert f"FAILED_PRECONDITION: job '{job_id}' already ended: succeeded" in cancelled.stderr
    bad = run(
        "finetune",
        "--address",
        address,
        "--base",
        str(tiny_bert),
        "--data",
        str(tmp_path / "missing.csv"),
        "--name",
        "x",
        env=env,
    )
    assert bad.returncode == 2 and "--task is required with --base" in bad.stderr


def test_finetune_shows_the_trials_and_the_baseline(env, served, tiny_bert, tmp_path) -> None:
    address, _ = served
    data = tmp_path / "train.csv"
    data.write_text(
        "text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in sentiment_rows(40))
    )
    tuned = run(
        "finetune",
        "--address",
        address,
        "--base",
        str(tiny_bert),
        "--task",
        "text-classification",
        "--data",
        str(data),
        "--name",
        "cli-search",
        "--trials",
        "2",
        "--batch-size",
        "8",
        "--max-length",
        "16",
        env=env,
    )
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    out = " ".join(tuned.stdout.split())  # rich wraps long lines at the console width
    assert "trial 1/2: lr 2.0e-04" in out and "trial 2/2: lr" in out
    assert "hyperparameter search" in out  # the final trial table
    assert "vs baseline (TF-IDF" in out and "points" in out
    assert "selection: search: 2 trials" in out
    assert "for the baseline on the same 8 validation rows" in out


def test_sigterm_stops_the_server_cleanly(served) -> None:
    _, proc = served
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def test_import_model_errors(env, tmp_path) -> None:
    result = run(
        "import-model",
        "--name",
        "x",
        "--task",
        "text-classification",
        str(tmp_path / "nowhere"),
        env=env,
    )
    assert result.returncode == 2
    assert "not a folder" in result.stderr
    result = run("import-model", "--name", "x", "--task", "nope", str(tmp_path), env=env)
    assert "task 'nope' is not registered (known tasks: " in result.stderr


def test_plugins_command(env) -> None:
    result = run("plugins", env=env)
    assert "edgetune.plugins.text_classification  (built-in" in result.stdout
    assert "task text-classification" in result.stdout
    assert "data-set reader jsonl (.jsonl, .ndjson, .json)" in result.stdout


def test_serving_never_imports_torch(env) -> None:
    """The serving path stays light: no torch, transformers or optimum."""
    code = (
        "import sys, edgetune.server.app, edgetune.cli, edgetune.plugins.manager as m;"
        "m.build_plugins(autoload=False);"
        "heavy = {'torch', 'transformers', 'optimum'} & set(sys.modules); print(sorted(heavy))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.stdout.strip() == "[]", result.stderr


def test_model_commands_take_options_before_or_after_the_name() -> None:
    from edgetune.cli import build_parser

    parser = build_parser()
    for argv in (
        ["models", "load", "news", "--address", "h:1", "--version", "3"],
        ["models", "--address", "h:1", "load", "news", "--version", "3"],
        ["models", "--version", "3", "load", "--address", "h:1", "news"],
    ):
        args = parser.parse_args(argv)
        assert (args.action, args.name, args.address, args.version) == ("load", "news", "h:1", "3")
