"""Measure an exported ONNX model through the task's own serving code."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgetune.serving.session import session_options
from edgetune.store import Manifest
from edgetune.task import IGNORE_INDEX, ModelFiles, Task, TaskRuntime, pad_to_longest

BATCH = 32


def open_model(
    task: Task, folder: Path, model_file: str, manifest: Manifest, threads: int = 0
) -> tuple[ort.InferenceSession, TaskRuntime]:
    """A CPU session for folder/model_file and the task runtime that feeds it.

    :param threads: intra-op threads; 0 = one per physical core, as served.
    """
    session = ort.InferenceSession(
        str(folder / model_file),
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
    )
    files = ModelFiles(
        folder,
        manifest,
        tuple(i.name for i in session.get_inputs()),
        tuple(o.name for o in session.get_outputs()),
    )
    return session, task.runtime(files)


def evaluate(
    task: Task,
    folder: Path,
    model_file: str,
    manifest: Manifest,
    examples: Sequence[Mapping[str, Any]],
    label_ids: Sequence[Any],
) -> dict[str, float]:
    """The task's metrics for an ONNX model on labelled examples, encoded as in serving.

    :param label_ids: the training targets of the examples (their features' "labels").
        Per-token targets must sit at the token positions of the runtime's encoding (the
        task tokenizes for training as its runtime does for serving); ragged ones are
        padded with `IGNORE_INDEX` and the outputs with zeros to the longest.
    """
    session, runtime = open_model(task, folder, model_file, manifest)
    outputs = []
    for start in range(0, len(examples), BATCH):
        inputs = [task.example_input(e) for e in examples[start : start + BATCH]]
        encoded = runtime.encode(inputs)
        logits = encoded.per_input(session.run(None, encoded.feeds))[0]
        outputs.extend(list(logits))
    targets = pad_to_longest([np.asarray(t) for t in label_ids], IGNORE_INDEX)
    return task.compute_metrics(
        np.stack(pad_to_longest(outputs, 0)), np.stack(targets), manifest.labels
    )


def latency_ms(
    task: Task,
    folder: Path,
    model_file: str,
    manifest: Manifest,
    example: Mapping[str, Any],
    runs: int = 30,
) -> float:
    """Median milliseconds of one single-input request (encode, run, decode)."""
    session, runtime = open_model(task, folder, model_file, manifest)
    inputs = [task.example_input(example)]
    timings = []
    for i in range(runs + 3):
        started = time.perf_counter()
        encoded = runtime.encode(inputs)
        runtime.decode(encoded.per_input(session.run(None, encoded.feeds)), encoded, 1)
        if i >= 3:  # the first runs warm caches
            timings.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(timings), 3)
