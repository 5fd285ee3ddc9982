"""Protobuf <-> domain objects. No logic beyond translation and field naming."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from edgetune.errors import InvalidArgument
from edgetune.plugins.manager import BUILTIN, ENTRY_POINT, MODULE, PluginInfo
from edgetune.serving.model import ServedModel
from edgetune.serving.registry import ModelStatus
from edgetune.store import ModelVersion
from edgetune.task import Image, Input, Result, Task, Text, TextPair, TokenIds
from edgetune.v1 import inference_pb2, models_pb2, server_pb2

if TYPE_CHECKING:  # types only: conformance.py imports this module, and stays light
    from edgetune.serving.admin import ModelDetails, ServerReport

_ORIGINS = {
    BUILTIN: server_pb2.PLUGIN_ORIGIN_BUILTIN,
    ENTRY_POINT: server_pb2.PLUGIN_ORIGIN_ENTRY_POINT,
    MODULE: server_pb2.PLUGIN_ORIGIN_MODULE,
}


def check_count(count: int, limit: int, field: str = "inputs") -> None:
    """Refuse a request by its number of inputs before anything is converted, so one huge
    request costs no more than a small one (the limit is the max_batch_size setting)."""
    if count > limit:
        raise InvalidArgument(f"{field} has {count} items; the limit is {limit}")


def inputs_from_pb(inputs: Sequence[inference_pb2.Input], limit: int) -> list[Input]:
    """Domain inputs from the request's `inputs` (at most limit); an input with no kind set
    is an error."""
    check_count(len(inputs), limit)
    converted: list[Input] = []
    for index, item in enumerate(inputs):
        match item.WhichOneof("kind"):
            case "text":
                converted.append(Text(item.text))
            case "text_pair":
                converted.append(TextPair(item.text_pair.text, item.text_pair.text_pair))
            case "image":
                converted.append(Image(item.image))
            case "tokens":
                converted.append(
                    TokenIds(tuple(item.tokens.ids), tuple(item.tokens.attention_mask))
                )
            case _:
                raise InvalidArgument(
                    f"inputs[{index}] has no input set: set one of text, text_pair, image, tokens"
                )
    return converted


def results_to_pb(results: Sequence[Result]) -> list[inference_pb2.Result]:
    """Protobuf results, labels and spans in the order the task gave them."""
    return [
        inference_pb2.Result(
            labels=[
                inference_pb2.LabelScore(label=s.label, score=s.score, selected=s.selected)
                for s in result.labels
            ],
            spans=[
                inference_pb2.Span(
                    start=s.start, end=s.end, label=s.label, score=s.score, text=s.text
                )
                for s in result.spans
            ],
        )
        for result in results
    ]


def model_info(
    version: ModelVersion,
    task: Task | None,
    served: ServedModel | None,
    aliases: list[str],
    pinned: bool,
    status: tuple[ModelStatus, str],
) -> models_pb2.ModelInfo:
    """ModelInfo for a version; `task` is None when no plugin serves its task."""
    manifest = version.manifest
    return models_pb2.ModelInfo(
        name=version.name,
        version=str(version.version),
        aliases=sorted(aliases),
        task=manifest.task,
        labels=[models_pb2.Label(index=i, name=n) for i, n in enumerate(manifest.labels)],
        input_kinds=[kind.kind for kind in task.input_kinds] if task else [],
        state=_STATES[status[0]],
        state_reason=status[1],
        base_model=manifest.base_model,
        format=manifest.format,
        size_bytes=version.model_file_bytes,
        created=manifest.created,
        metrics=manifest.metrics,
        providers=served.providers if served else [],
        memory_bytes=served.memory_bytes if served else 0,
        pinned=pinned,
    )


def details_to_pb(details: ModelDetails) -> models_pb2.ModelInfo:
    """ModelInfo for a version as the model administration describes it."""
    return model_info(
        details.version,
        details.task,
        details.served,
        details.aliases,
        details.pinned,
        details.status,
    )


_STATES = {
    ModelStatus.AVAILABLE: models_pb2.MODEL_STATE_AVAILABLE,
    ModelStatus.LOADING: models_pb2.MODEL_STATE_LOADING,
    ModelStatus.LOADED: models_pb2.MODEL_STATE_LOADED,
    ModelStatus.FAILED: models_pb2.MODEL_STATE_FAILED,
}


def plugin_to_pb(info: PluginInfo) -> server_pb2.Plugin:
    """A Plugin message."""
    return server_pb2.Plugin(
        name=info.name,
        origin=_ORIGINS[info.origin],
        distribution=info.distribution,
        distribution_version=info.distribution_version,
        module=info.module,
    )


def task_to_pb(task: Task, plugin: str) -> server_pb2.Task:
    """A Task message."""
    return server_pb2.Task(
        name=task.name,
        description=task.description,
        input_kinds=[kind.kind for kind in task.input_kinds],
        plugin=plugin,
    )


def server_info_to_pb(report: ServerReport) -> server_pb2.ServerInfo:
    """A ServerInfo message: version, plugins, tasks, providers, limits, memory."""
    plugins, settings = report.plugins, report.settings
    return server_pb2.ServerInfo(
        version=report.version,
        plugins=[plugin_to_pb(info) for info in plugins.infos],
        tasks=[
            task_to_pb(task, plugins.task_plugins[name])
            for name, task in sorted(plugins.tasks.items())
        ],
        execution_providers=report.providers,
        limits=server_pb2.Limits(
            max_batch_size=settings.limits.max_batch_size,
            max_text_bytes=settings.limits.max_text_bytes,
            max_message_bytes=settings.limits.max_message_bytes,
        ),
        onnxruntime_version=report.onnxruntime_version,
        memory=server_pb2.Memory(
            resident_bytes=report.resident_bytes,
            models_bytes=report.models_bytes,
            budget_bytes=report.budget_bytes,
        ),
        ready=report.ready,
        model_control=settings.runtime.model_control,
        capabilities=report.capabilities,
    )
