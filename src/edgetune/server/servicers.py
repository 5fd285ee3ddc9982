"""gRPC servicers: protobuf in -> domain call -> protobuf out. Nothing else lives here."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from edgetune.errors import EdgetuneError
from edgetune.server import convert
from edgetune.server.status import status_of
from edgetune.serving.admin import ModelAdmin
from edgetune.serving.service import InferenceService
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
            convert.inputs_from_pb(request.inputs, self.service.settings.limits.max_batch_size),
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
    """edgetune.v1.Models: each call goes to `serving/admin.py`."""

    def __init__(self, admin: ModelAdmin) -> None:
        self.admin = admin

    async def ListModels(
        self, request: models_pb2.ListModelsRequest, context: Context
    ) -> models_pb2.ListModelsResponse:
        """Every model and version in the repository."""
        return models_pb2.ListModelsResponse(
            models=[
                models_pb2.ModelSummary(
                    name=name, versions=[convert.details_to_pb(d) for d in versions]
                )
                for name, versions in await self.admin.list_models()
            ]
        )

    async def GetModel(
        self, request: models_pb2.GetModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """One version."""
        return convert.details_to_pb(await self.admin.get(request.name, request.version))

    async def LoadModel(
        self, request: models_pb2.LoadModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Load and warm up a version."""
        return convert.details_to_pb(await self.admin.load(request.name, request.version))

    async def UnloadModel(
        self, request: models_pb2.UnloadModelRequest, context: Context
    ) -> models_pb2.UnloadModelResponse:
        """Unload a version."""
        version = await self.admin.unload(request.name, request.version)
        return models_pb2.UnloadModelResponse(version=str(version.version))

    async def ImportModel(
        self, request: models_pb2.ImportModelRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Build, export and publish a model from an uploaded base, in a child process."""
        details = await self.admin.import_model(
            request.name,
            request.task,
            request.base,
            list(request.labels),
            request.max_length,
            dict(request.label_descriptions),
        )
        return convert.details_to_pb(details)

    async def SetAlias(
        self, request: models_pb2.SetAliasRequest, context: Context
    ) -> models_pb2.ModelInfo:
        """Load and warm a version, then point the alias at it."""
        details = await self.admin.set_alias(request.name, request.alias, request.version)
        return convert.details_to_pb(details)


class ServerServicer(server_pb2_grpc.ServerServicer):
    """edgetune.v1.Server."""

    def __init__(self, admin: ModelAdmin) -> None:
        self.admin = admin

    async def GetServerInfo(
        self, request: server_pb2.GetServerInfoRequest, context: Context
    ) -> server_pb2.ServerInfo:
        """Version, plugins, tasks, providers, limits."""
        return convert.server_info_to_pb(self.admin.server_report())
