"""The one place where exceptions become gRPC status codes, and where calls are authorized.

Every RPC, unary or streaming, passes through `ErrorInterceptor`: an `EdgetuneError` becomes
its own code and message; anything else is logged with its stack trace and becomes INTERNAL
with a generic message, so nothing internal reaches a client. `AuthInterceptor` (when the
server has an authenticator) runs first and refuses a call before any handler code runs.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio

from edgetune.auth import Authenticator, required_scope
from edgetune.errors import (
    EdgetuneError,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
)
from edgetune.server.status import status_of

log = logging.getLogger(__name__)
Handler = Any  # grpc.RpcMethodHandler


async def abort_with(context: Any, exc: Exception) -> None:
    """End the call with the status for exc (re-raises aborts already in progress)."""
    if isinstance(exc, aio.AbortError):
        raise exc
    if not isinstance(exc, EdgetuneError):
        log.exception("unhandled error in RPC", exc_info=exc)
    code, message = status_of(exc)
    await context.abort(code, message)


def _parser(deserialize: Callable[[bytes], Any] | None) -> Callable[[Any], Any]:
    """The handler's request deserializer, run inside the call: bytes that are no valid
    message (a corrupt field, a string that is not UTF-8) are the client's mistake and end
    as INVALID_ARGUMENT, not as grpc's UNKNOWN that names the parser's exception."""

    def parse(raw: Any) -> Any:
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except Exception as exc:  # protobuf's DecodeError
            raise InvalidArgument(f"the request is not a valid message: {exc}") from None

    return parse


async def _parsed(
    raw_requests: AsyncIterator[Any], parse: Callable[[Any], Any]
) -> AsyncIterator[Any]:
    async for raw in raw_requests:
        yield parse(raw)


def _wrap(
    behavior: Callable[..., Any], parse: Callable[[Any], Any], stream_request: bool
) -> Callable[..., Any]:
    def request_of(request: Any) -> Any:
        return _parsed(request, parse) if stream_request else parse(request)

    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async for response in behavior(request_of(request), context):
                    yield response
            except Exception as exc:
                await abort_with(context, exc)

        return stream

    async def unary(request: Any, context: Any) -> Any:
        try:
            return await behavior(request_of(request), context)
        except Exception as exc:
            await abort_with(context, exc)

    return unary


class ErrorInterceptor(aio.ServerInterceptor):
    """Maps exceptions raised by any servicer to status codes."""

    def __init__(self) -> None:
        # Handlers are fixed per method, so each is wrapped once, not on every call.
        self._wrapped: dict[str, Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(handler_call_details)
            if handler is None:
                return handler
            wrapped = self._wrapped[method] = _wrap_handler(handler)
        return wrapped


_KINDS = (
    # (attribute of the handler, its builder, whether requests arrive as a stream)
    ("unary_unary", grpc.unary_unary_rpc_method_handler, False),
    ("unary_stream", grpc.unary_stream_rpc_method_handler, False),
    ("stream_unary", grpc.stream_unary_rpc_method_handler, True),
    ("stream_stream", grpc.stream_stream_rpc_method_handler, True),
)


def rebuild_handler(
    handler: Handler,
    behavior_for: Callable[[Callable[..., Any], bool], Callable[..., Any]],
    request_deserializer: Any,
) -> Handler:
    """A handler of the same kind as handler, whose behavior is behavior_for(its behavior,
    whether requests stream)."""
    for attribute, build, stream_request in _KINDS:
        behavior = getattr(handler, attribute)
        if behavior:
            return build(
                behavior_for(behavior, stream_request),
                request_deserializer=request_deserializer,
                response_serializer=handler.response_serializer,
            )
    raise ValueError(f"handler {handler!r} has no behavior")


def _wrap_handler(handler: Handler) -> Handler:
    parse = _parser(handler.request_deserializer)
    # Requests reach the wrapper as bytes and are parsed there (see `_parser`).
    return rebuild_handler(
        handler, lambda behavior, stream_request: _wrap(behavior, parse, stream_request), None
    )


class AuthInterceptor(aio.ServerInterceptor):
    """Checks that the caller holds the scope each method needs (see `edgetune.auth`)."""

    def __init__(self, authenticator: Authenticator) -> None:
        self.authenticator = authenticator

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        method = handler_call_details.method
        scope = required_scope(method)
        if scope is None:
            return await continuation(handler_call_details)
        pairs = [
            (key.lower(), value)
            for key, value in handler_call_details.invocation_metadata or ()
            if isinstance(value, str)
        ]
        metadata = dict(pairs)

        def check() -> None:
            if sum(key == "authorization" for key, _ in pairs) > 1:
                raise Unauthenticated("send one authorization header, not several")
            principal = self.authenticator.authenticate(metadata)
            if scope not in principal.scopes:
                raise PermissionDenied(
                    f"token {principal.name!r} lacks the scope {scope!r} that {method} needs"
                )

        try:
            check()
        except Exception as exc:
            handler = await continuation(handler_call_details)
            return None if handler is None else _refusal(handler, exc)
        handler = await continuation(handler_call_details)
        if handler is None or not (handler.stream_unary or handler.stream_stream):
            return handler
        # A stream stays open for as long as the client likes: each message it sends is
        # checked again, so a revoked token stops working on open streams at once (the
        # check is a stat of the token file and a hash comparison).
        return rebuild_handler(
            handler,
            lambda behavior, stream_request: _rechecked(behavior, check),
            handler.request_deserializer,
        )


def _rechecked(behavior: Callable[..., Any], check: Callable[[], None]) -> Callable[..., Any]:
    """A streaming-request behavior whose request iterator runs check() before each
    message; a failed check ends the call with its status."""

    async def messages(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for message in requests:
            check()
            yield message

    if inspect.isasyncgenfunction(behavior):

        async def stream(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
            async for response in behavior(messages(requests), context):
                yield response

        return stream

    async def unary(requests: AsyncIterator[Any], context: Any) -> Any:
        return await behavior(messages(requests), context)

    return unary


def _refusal(handler: Handler, exc: Exception) -> Handler:
    """A handler of the same kind as handler that ends the call with exc's status."""

    async def refuse(request: Any, context: Any) -> Any:
        await abort_with(context, exc)

    async def refuse_stream(request: Any, context: Any) -> AsyncIterator[Any]:
        await abort_with(context, exc)
        yield  # pragma: no cover - never reached; makes this an async generator

    def behavior_for(behavior: Callable[..., Any], stream_request: bool) -> Callable[..., Any]:
        return refuse_stream if inspect.isasyncgenfunction(behavior) else refuse

    return rebuild_handler(handler, behavior_for, handler.request_deserializer)
