"""The int8 accuracy gate: the fused graph first, plain int8 next, fp32 or failure last."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetune.errors import FailedPrecondition
from edgetune.exporters import gate as int8_gate
from edgetune.exporters.onnx import export_onnx
from edgetune.plugins.text_classification import TextClassification
from edgetune.settings import Settings
from edgetune.store import Manifest

task = TextClassification()
ROWS = [{"text": "good fun", "label": "positive"}, {"text": "bad plot", "label": "negative"}]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> tuple[Path, Manifest]:
    folder = tmp_path_factory.mktemp("export")
    model = task.build_model(tiny_bert, ["negative", "positive"])
    tokenizer = task.load_preprocessor(tiny_bert)
    export_onnx(task, model, tokenizer, folder)
    return folder, Manifest(
        task=task.name,
        labels=["negative", "positive"],
        task_options=task.task_options(model, tokenizer, 16),
    )


def scored(accuracies: dict[str, float]):
    def fake_evaluate(task, folder, name, manifest, rows, labels):
        assert (folder / name).is_file()  # the candidate was really written
        return {"accuracy": accuracies[name]}

    return fake_evaluate


def gate(exported, settings: Settings):
    folder, manifest = exported
    return int8_gate.choose_int8(
        task,
        folder,
        manifest,
        {"accuracy": 1.0},
        ROWS,
        [1, 0],
        budget=settings.training.max_accuracy_drop,
        on_failure=settings.training.gate_failure,
    )


def test_the_fused_graph_wins_when_it_holds_accuracy(exported, monkeypatch) -> None:
    monkeypatch.setattr(
        int8_gate, "evaluate", scored({int8_gate.FUSED_FILE: 0.995, int8_gate.INT8_FILE: 1.0})
    )
    chosen, metrics, verdict = gate(exported, Settings())
    assert chosen == int8_gate.FUSED_FILE and metrics == {"accuracy": 0.995}
    assert "published fused int8" in verdict


def test_plain_int8_when_the_fused_graph_loses_accuracy(exported, monkeypatch) -> None:
    monkeypatch.setattr(
        int8_gate, "evaluate", scored({int8_gate.FUSED_FILE: 0.95, int8_gate.INT8_FILE: 0.995})
    )
    chosen, _, verdict = gate(exported, Settings())
    assert chosen == int8_gate.INT8_FILE
    assert (
        "fused int8 accuracy 0.9500 (drop 5.00 points)" in verdict and "published int8" in verdict
    )


def test_fp32_or_failure_when_no_int8_model_holds(exported, monkeypatch) -> None:
    monkeypatch.setattr(
        int8_gate, "evaluate", scored({int8_gate.FUSED_FILE: 0.9, int8_gate.INT8_FILE: 0.97})
    )
    chosen, metrics, verdict = gate(exported, Settings())
    assert chosen is None and metrics == {"accuracy": 0.9}
    assert verdict.endswith("over the budget of 1.00 points, published fp32")
    with pytest.raises(
        FailedPrecondition, match=r"accuracy gate: .* over the budget of 1\.00 points"
    ):
        gate(exported, Settings(gate_failure="fail"))
    chosen, _, _ = gate(exported, Settings(max_accuracy_drop=0.05))
    assert chosen == int8_gate.INT8_FILE
