"""gRPC servicers: protobuf in -> domain call -> protobuf out. Nothing else lives here."""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

import onnxruntime as ort

import edgetune
from edgetune.errors import EdgetuneError, InvalidArgument, NotFound, quoted
from edgetune.extras import capabilities, require_train
from edgetune.plugins.manager import Plugins
from edgetune.server import convert
from edgetune.server.kserve import ServerState
from edgetune.server.status import status_of
from edgetune.serving.memory import resident_bytes
from edgetune.serving.registry import ModelRegistry
from edgetune.serving.service import InferenceService
from edgetune.settings import Settings
from edgetune.store import ModelRepository, ModelVersion
from edgetune.store.repository import check_name
from edgetune.training.bases import check_base_name
from edgetune.training.jobs import settings_env
from edgetune.v1 import (
    inference_pb2,
    inference_pb2_grpc,
    models_pb2,
    models_pb2_grpc,
    server_pb2,
    server_pb2_grpc,
)

log = logging.getLogger(__name__)
Context = Any  # grpc.aio.ServicerContext
_VERSION_NUMBER = re.compile(r"[0-9]{1,18}")
"""A version number as SetAlias takes it: ASCII digits that fit an int64."""


class InferenceServicer(inference_pb2_grpc.InferenceServicer):
    """edgetune.v1.Inference."""

    def __init__(self, service: InferenceService) -> None:
        self.service = service

    async def Classify(
        self, request: inference_pb2.ClassifyRequest, context: Context
    ) -> inference_pb2.ClassifyResponse:
        """Classify one batch."""
        answer = await self.service.classify(
            request.model,
            request.version,
            convert.inputs_from_pb(request.inputs, self.service.settings.max_batch_size),
            request.top_k,
        )
        return inference_pb2.ClassifyResponse(
            model=answer.version.name,
            version=str(answer.version.version),
            results=convert.results_to_pb(answer.results),
        )

    async def ClassifyStream(
        self, request_iterator: AsyncIterator[inference_pb2.ClassifyStreamRequest], context: Context
    ) -> AsyncIterator[inference_pb2.ClassifyStreamResponse]:
        """One response per request, in order; a bad request gets `error`, the stream goes on."""
        async for message in request_iterator:
            try:
                response = await self.Classify(message.request, context)
            except Exception as exc:
                if not isinstance(exc, EdgetuneError):
                    log.exception("unhandled error in ClassifyStream", exc_info=exc)
                code, text = status_of(exc)
                error = inference_pb2.Error(code=code.value[0], message=text)
                yield inference_pb2.ClassifyStreamResponse(id=message.id, error=error)
            else:
                yield inference_pb2.ClassifyStreamResponse(id=message.id, response=response)


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    """edgetune.v1.Models."""

    def __init__(
        self, repository: ModelRepository, registry: ModelRegistry, settings: Settings
    ) -> None:
        self.repository = repository
        self.registry = registry
        self.settings = settings
        self._imports = asyncio.Lock()

    def _info(self, version: ModelVersion) -> models_pb2.ModelInfo:
        aliases = self.repository.aliases(version.name)
        return convert.model_info(
            version,
            self.registry.plugins.tasks.get(version.manifest.task),
            self.registry.loaded.get(version.key),
            [alias for alias, number in aliases.items() if number == version.version],
            self.registry.pinned(version),
            self.registry.status(version),
        )

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        """Every model and version in the repository."""
        return models_pb2.ListModelsResponse(
            models=[
                models_pb2.ModelSummary(
                    name=name,
                    versions=[
                        self._info(self.repository.get(name, number))
                        for number in self.repository.versions(name)
                    ],
                )
                for name in self.repository.model_names()
            ]
        )

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """One version."""
        _require_name(request.name)
        return self._info(self.registry.routed(request.name, request.version))

    async def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Load and warm up a version."""
        _require_name(request.name)
        served = await self.registry.load(request.name, request.version)
        return self._info(served.version)

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: Context
    ) -> models_pb2.UnloadModelResponse:
        """Unload a version."""
        _require_name(request.name)
        version = await self.registry.unload(request.name, request.version)
        return models_pb2.UnloadModelResponse(version=str(version.version))

    async def ImportModel(
        self, request: models_pb2.ImportModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Build, export and publish a model from an uploaded base, in a child process."""
        require_train("import-model")
        _require_name(request.name)
        if not request.task:
            raise InvalidArgument("task is required")
        self.registry.plugins.task(request.task)  # NOT_FOUND naming the known tasks
        if not request.base:
            raise InvalidArgument("base is required: the name of an uploaded base")
        folder = self.settings.bases_dir / check_base_name(request.base, "base")
        if not folder.is_dir():
            raise NotFound(f"base {request.base!r} not found: upload it with UploadBase")
        check_name(request.name)
        command = [
            sys.executable, "-m", "edgetune", "import-model", "--name", request.name,
            "--task", request.task, str(folder),
        ]  # fmt: skip
        if request.labels:
            command += ["--labels", ",".join(request.labels)]
        if request.max_length:
            command += ["--max-length", str(request.max_length)]
        async with self._imports:  # one export at a time: each takes the CPU for a while
            process = await asyncio.create_subprocess_exec(
                *command,
                env=settings_env(self.settings),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )
            _, stderr = await process.communicate()
        if process.returncode != 0:
            lines = stderr.decode(errors="replace").strip().splitlines()
            reason = next((line for line in reversed(lines) if line.startswith("error: ")), "")
            if reason and process.returncode == 2:  # the command's own, bounded message
                raise InvalidArgument(reason.removeprefix("error: "))
            log.error("import-model failed (%d): %s", process.returncode, "\n".join(lines[-20:]))
            raise EdgetuneError("the import failed; the server's log has the details")
        version = await asyncio.to_thread(self.repository.resolve, request.name, "")
        return self._info(version)

    async def SetAlias(
        self, request: models_pb2.SetAliasRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Load and warm a version, then point the alias at it."""
        _require_name(request.name)
        if not request.alias:
            raise InvalidArgument("alias is required")
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if not _VERSION_NUMBER.fullmatch(request.version):
            raise InvalidArgument(f"version {quoted(request.version)} must be a version number")
        served = await self.registry.promote(request.name, int(request.version), request.alias)
        return self._info(served.version)


class ServerServicer(server_pb2_grpc.ServerServicer):
    """edgetune.v1.Server."""

    def __init__(
        self, plugins: Plugins, registry: ModelRegistry, settings: Settings, state: ServerState
    ) -> None:
        self.plugins = plugins
        self.registry = registry
        self.settings = settings
        self.state = state

    async def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: Context
    ) -> server_pb2.ServerInfo:
        """Version, plugins, tasks, providers, limits."""
        return server_pb2.ServerInfo(
            version=edgetune.__version__,
            plugins=[convert.plugin_to_pb(info) for info in self.plugins.infos],
            tasks=[
                convert.task_to_pb(task, self.plugins.task_plugins[name])
                for name, task in sorted(self.plugins.tasks.items())
            ],
            execution_providers=self.registry.providers,
            limits=server_pb2.Limits(
                max_batch_size=self.settings.max_batch_size,
                max_text_bytes=self.settings.max_text_bytes,
                max_message_bytes=self.settings.max_message_bytes,
            ),
            onnxruntime_version=ort.__version__,
            memory=server_pb2.Memory(
                resident_bytes=resident_bytes(),
                models_bytes=self.registry.models_bytes,
                budget_bytes=self.registry.budget_bytes,
            ),
            ready=self.state.ready,
            model_control=self.settings.model_control,
            capabilities=capabilities(),
        )


def _require_name(name: str) -> None:
    if not name:
        raise InvalidArgument("name is required")
