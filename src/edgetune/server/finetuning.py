"""edgetune.v1.FineTuning: protobuf in -> `training/service.py` -> protobuf out (the
conversions are `server/convert_jobs.py`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from edgetune.server import convert_jobs
from edgetune.training.service import FineTuningService
from edgetune.v1 import finetuning_pb2 as pb
from edgetune.v1 import finetuning_pb2_grpc

Context = Any  # grpc.aio.ServicerContext


class FineTuningServicer(finetuning_pb2_grpc.FineTuningServicer):
    """edgetune.v1.FineTuning."""

    def __init__(self, service: FineTuningService) -> None:
        self.service = service

    async def UploadBase(
        self, request_iterator: AsyncIterator[pb.UploadBaseRequest], context: Context
    ) -> pb.Base:
        """Receive the header and each file's chunks, check them, store the base."""
        parts = convert_jobs.base_parts(request_iterator)
        return convert_jobs.base_to_pb(await self.service.upload_base(parts))

    async def ListBases(
        self, request: pb.ListBasesRequest, context: Context
    ) -> pb.ListBasesResponse:
        """The stored bases."""
        bases = await self.service.list_bases()
        return pb.ListBasesResponse(bases=[convert_jobs.base_to_pb(base) for base in bases])

    async def DeleteBase(
        self, request: pb.DeleteBaseRequest, context: Context
    ) -> pb.DeleteBaseResponse:
        """Remove a stored base."""
        await self.service.delete_base(request.name)
        return pb.DeleteBaseResponse()

    async def UploadDataset(
        self, request_iterator: AsyncIterator[pb.UploadDatasetRequest], context: Context
    ) -> pb.Dataset:
        """Receive the header and chunks, then validate and store the file."""
        parts = convert_jobs.dataset_parts(request_iterator)
        return convert_jobs.dataset_to_pb(await self.service.upload_dataset(parts))

    async def CreateJob(self, request: pb.CreateJobRequest, context: Context) -> pb.Job:
        """Validate and queue a job."""
        job_request = convert_jobs.job_request_from_pb(request)
        return convert_jobs.job_to_pb(await self.service.create_job(job_request))

    async def GetJob(self, request: pb.GetJobRequest, context: Context) -> pb.Job:
        """One job."""
        return convert_jobs.job_to_pb(await self.service.get_job(request.id))

    async def ListJobs(self, request: pb.ListJobsRequest, context: Context) -> pb.ListJobsResponse:
        """A page of jobs."""
        states = convert_jobs.states_from_pb(request.states)
        page = await self.service.list_jobs(states, request.page_size, request.page_token)
        return convert_jobs.jobs_page_to_pb(page)

    async def CancelJob(self, request: pb.CancelJobRequest, context: Context) -> pb.Job:
        """Cancel a job and return it once it has stopped."""
        return convert_jobs.job_to_pb(await self.service.cancel_job(request.id))

    async def WatchJob(
        self, request: pb.WatchJobRequest, context: Context
    ) -> AsyncIterator[pb.JobEvent]:
        """Stream a job's events until it is final."""
        async for event in self.service.watch_job(request.id, request.after_sequence):
            yield convert_jobs.event_to_pb(event)
