"""The gRPC service every replica runs, on the same event loop as its HTTP server.

Payloads are opaque bytes (see codec.py), so no protobuf is involved. A call is admitted only
with the cluster token and only while the replica has room (``max_ongoing_requests``); the
admission is confirmed to the caller by initial metadata before any user code runs, so a
caller knows whether retrying elsewhere is safe.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from swell._dataplane import codec

SERVICE = "swell.Replica"
CALL_METHOD = f"/{SERVICE}/Call"
STREAM_METHOD = f"/{SERVICE}/Stream"
TOKEN_KEY = "swell-token"
ACCEPTED_KEY = "swell-accepted"
QUEUE_KEY = "swell-queue"
UNLIMITED_MESSAGES = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
]


class Dispatcher(Protocol):
    """Runs a method of the user's deployment."""

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]: ...


class ReplicaService:
    """Admission (token, capacity), then the user's method; errors travel back as values."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        token: str,
        max_ongoing: int,
        other_ongoing: Callable[[], int],
    ) -> None:
        self._dispatcher = dispatcher
        self._token = token
        self._max_ongoing = max_ongoing
        self._other_ongoing = other_ongoing
        self.ongoing = 0

    def load(self) -> int:
        return self.ongoing + self._other_ongoing()

    async def _admit(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        metadata = dict(context.invocation_metadata() or ())
        if metadata.get(TOKEN_KEY) != self._token:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong cluster token")
        if self.load() >= self._max_ongoing:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "replica at capacity")
        self.ongoing += 1
        await context.send_initial_metadata(((ACCEPTED_KEY, "1"),))

    def _report_load(self, context: grpc.aio.ServicerContext[bytes, bytes]) -> None:
        context.set_trailing_metadata(((QUEUE_KEY, str(self.load())),))

    async def call(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        """One result, sent as a one-message stream: gRPC delivers a unary call's initial
        metadata only with its response, and the caller must learn of admission before."""
        await self._admit(context)
        try:
            method, args, kwargs = codec.loads(request)
            try:
                result = codec.encode_result(await self._dispatcher.call(method, args, kwargs))
            except asyncio.CancelledError:
                raise
            except Exception as error:
                result = codec.encode_error(error)
            yield result
        finally:
            self.ongoing -= 1
            self._report_load(context)

    async def stream(
        self, request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
    ) -> AsyncIterator[bytes]:
        await self._admit(context)
        try:
            method, args, kwargs = codec.loads(request)
            try:
                async for item in self._dispatcher.stream(method, args, kwargs):
                    yield codec.encode_result(item)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                yield codec.encode_error(error)
        finally:
            self.ongoing -= 1
            self._report_load(context)

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "Call": grpc.unary_stream_rpc_method_handler(self.call),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream),
            },
        )


async def start_server(service: ReplicaService, host: str) -> tuple[grpc.aio.Server, int]:
    """Bind to ``host`` (loopback on one machine) on a free port."""
    server = grpc.aio.server(options=UNLIMITED_MESSAGES)
    server.add_generic_rpc_handlers((service.handler(),))
    port = server.add_insecure_port(f"{host}:0")
    await server.start()
    return server, port
