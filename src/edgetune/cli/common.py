"""What the client commands share: the channel from their flags, readable job states."""

from __future__ import annotations

import argparse

import grpc

from edgetune.client import open_channel
from edgetune.v1 import finetuning_pb2


def client_channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel for a client command's --address, TLS flags and --token."""
    return open_channel(
        args.address,
        ca_file=args.tls_ca,
        cert_file=args.tls_cert,
        key_file=args.tls_key,
        token=args.token,
    )


def state_name(state: int) -> str:
    """ "running" for JOB_STATE_RUNNING."""
    return str(finetuning_pb2.JobState.Name(state)).removeprefix("JOB_STATE_").lower()
