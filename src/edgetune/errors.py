"""One error hierarchy for edgetune; each error carries a transport-neutral `Code`.

Code raises these anywhere (the training worker and the CLI included, neither of which
speaks gRPC); the server maps a `Code` to a gRPC status in one table
(`edgetune.server.status`). The message is what the client reads, so it names the
field, row, model or plugin that is wrong and never holds a stack trace.
"""

from __future__ import annotations

from enum import Enum


class Code(Enum):
    """What kind of failure an error is, named as the gRPC and KServe status codes are."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    INTERNAL = "INTERNAL"


class EdgetuneError(Exception):
    """Base of every error edgetune reports to a user."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(EdgetuneError):
    """A request field, data-set row or command-line argument is wrong."""

    code = Code.INVALID_ARGUMENT


class NotFound(EdgetuneError):
    """A model, version, alias, task or job does not exist."""

    code = Code.NOT_FOUND


class AlreadyExists(EdgetuneError):
    """Something with that name or version already exists."""

    code = Code.ALREADY_EXISTS


class FailedPrecondition(EdgetuneError):
    """The request is valid but the system is not in a state to run it."""

    code = Code.FAILED_PRECONDITION


class ResourceExhausted(EdgetuneError):
    """A queue, quota or size limit is full."""

    code = Code.RESOURCE_EXHAUSTED


class Unavailable(EdgetuneError):
    """The server is draining or a model is being swapped out."""

    code = Code.UNAVAILABLE


class Unauthenticated(EdgetuneError):
    """The call carries no credentials, or credentials the server does not accept."""

    code = Code.UNAUTHENTICATED


class PermissionDenied(EdgetuneError):
    """The caller is known but lacks the scope the method needs."""

    code = Code.PERMISSION_DENIED


class ModelLoadError(EdgetuneError):
    """A model version on disk cannot be loaded (corrupt, wrong checksum, bad manifest)."""

    code = Code.FAILED_PRECONDITION


class PluginError(EdgetuneError):
    """A plugin failed to import, implements an unknown hook, or clashes with another.

    Raised at start-up; the message names the plugin and where it came from.
    """

    code = Code.INTERNAL


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


def client_message(exc: BaseException) -> tuple[Code, str]:
    """The neutral code and client-safe message for any exception.

    Unknown exceptions become INTERNAL with a generic message: internals never reach a
    client. Messages are cut to MAX_MESSAGE_CHARS.
    """
    if isinstance(exc, EdgetuneError):
        message = exc.message
        if len(message) > MAX_MESSAGE_CHARS:
            message = message[: MAX_MESSAGE_CHARS - 12] + " ... (cut)"
        return exc.code, message
    return Code.INTERNAL, INTERNAL_MESSAGE
