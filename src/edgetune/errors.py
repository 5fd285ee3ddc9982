"""One error hierarchy for edgetune; each error carries the gRPC status code it maps to.

Code raises these anywhere; the server maps them to a status in one place
(`edgetune.server.interceptors`). The message is what the client reads, so it names the
field, row, model or plugin that is wrong and never holds a stack trace.
"""

from __future__ import annotations

import grpc


class EdgetuneError(Exception):
    """Base of every error edgetune reports to a user."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(EdgetuneError):
    """A request field, data-set row or command-line argument is wrong."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(EdgetuneError):
    """A model, version, alias, task or job does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(EdgetuneError):
    """Something with that name or version already exists."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(EdgetuneError):
    """The request is valid but the system is not in a state to run it."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(EdgetuneError):
    """A queue, quota or size limit is full."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(EdgetuneError):
    """The server is draining or a model is being swapped out."""

    code = grpc.StatusCode.UNAVAILABLE


class Unauthenticated(EdgetuneError):
    """The call carries no credentials, or credentials the server does not accept."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(EdgetuneError):
    """The caller is known but lacks the scope the method needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ModelLoadError(EdgetuneError):
    """A model version on disk cannot be loaded (corrupt, wrong checksum, bad manifest)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PluginError(EdgetuneError):
    """A plugin failed to import, implements an unknown hook, or clashes with another.

    Raised at start-up; the message names the plugin and where it came from.
    """

    code = grpc.StatusCode.INTERNAL


INTERNAL_MESSAGE = "internal error; see the server log"
MAX_MESSAGE_CHARS = 1000
"""Longest status message sent: with what clients echo in it, a longer one could pass the
client's metadata limit (16 KiB by default), which it reports instead of the real error."""


def quoted(value: str, limit: int = 64) -> str:
    """A client's value quoted for a message, cut to limit characters (a name or id is
    echoed so the client sees which, never at any length)."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}... ({len(value)} characters)"


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe message for any exception.

    Unknown exceptions become INTERNAL with a generic message: internals never reach a client.
    """
    if isinstance(exc, EdgetuneError):
        message = exc.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 12] + " ... (cut)"
        return exc.code, message
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
