"""inference.GRPCInferenceService (KServe v2 / Open Inference Protocol): protobuf in ->
service call -> protobuf out. Inference runs through the same InferenceService as
edgetune.v1.Classify, so both protocols give the same answers and the same errors; the
tensor conversion is `server/convert_v2.py`, metadata and readiness `serving/admin.py`."""

from __future__ import annotations

from typing import Any

import edgetune
from edgetune.kserve import grpc_predict_v2_pb2 as pb
from edgetune.kserve import grpc_predict_v2_pb2_grpc
from edgetune.server import convert_v2
from edgetune.serving.admin import ModelAdmin
from edgetune.serving.service import InferenceService

Context = Any  # grpc.aio.ServicerContext


class KServeServicer(grpc_predict_v2_pb2_grpc.GRPCInferenceServiceServicer):
    """inference.GRPCInferenceService."""

    def __init__(self, service: InferenceService, admin: ModelAdmin) -> None:
        self.service = service
        self.admin = admin

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        """Always live while it can answer."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        """Ready once start-up loading has finished, until shutdown begins."""
        return pb.ServerReadyResponse(ready=self.admin.state.ready)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Loaded and warmed up (a request is answered without a load); false for an
        unknown model."""
        return pb.ModelReadyResponse(ready=await self.admin.ready(request.name, request.version))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        """Name and version."""
        return pb.ServerMetadataResponse(name="edgetune", version=edgetune.__version__)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        """Versions and the tensors the model's task takes and returns."""
        version, task, versions = await self.admin.metadata(request.name, request.version)
        return convert_v2.metadata_to_pb(version, task, versions)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        """Tensors in, classify, tensors out (raw when the request was raw); the outputs
        are described in `convert_v2.infer_response`."""
        answer = await self.service.classify(
            request.model_name,
            request.model_version,
            convert_v2.inputs_from_tensors(request, self.service.settings.limits.max_batch_size),
        )
        return convert_v2.infer_response(request, answer, self.admin.task_of(answer.version))
