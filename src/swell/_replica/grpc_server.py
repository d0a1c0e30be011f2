"""The gRPC side of an ingress replica: a grpc.aio server on the replica's loop and own port.

HAProxy's gRPC frontend forwards each call (HTTP/2) here; every method of the services in
``grpc_options.grpc_servicer_functions`` is answered by the user's deployment method of the
same name, called with the request message (and ``grpc_context=`` when it takes one), its
result (or, for server-streaming, each item it yields) sent back as the response. Admission
is HAProxy's, as for HTTP: a server's ``maxconn`` is ``max_ongoing_requests`` and excess calls
queue there. Failures map to gRPC status codes; a client that cancels (or whose deadline
passes) cancels the user's call, because grpc.aio cancels the handler's task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import grpc
import grpc.aio

from swell._cluster_tls import ClusterTLS
from swell._grpc_services import ServiceMethod, load_service_methods
from swell._protocol import GRPC_API_SERVICE, GRPC_APPLICATIONS_HEADER
from swell._replica.user_callable import UserCallable
from swell.exceptions import BackPressureError, ReplicaUnavailableError

logger = logging.getLogger("swell.replica")

# Metadata keys Ray Serve's gRPC proxy reads and returns.
REQUEST_ID_KEY = "request_id"
_CONTEXT_PARAMETER = "grpc_context"


class _Counter(Protocol):
    """The replica's in-flight count (autoscaling and draining read it)."""

    ongoing: int


class _Failure(Exception):
    """Carries the status a call ends with, out of the ``except`` that chose it."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key in (REQUEST_ID_KEY, "x-request-id") and isinstance(value, str) and value:
            return value[:128]
    return uuid.uuid4().hex


def _failure_of(error: BaseException, method: str, request_id: str) -> _Failure:
    """The status a user's exception becomes (Ray's: INTERNAL unless it is about load)."""
    if isinstance(error, BackPressureError):
        return _Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error))
    if isinstance(error, ReplicaUnavailableError):
        return _Failure(grpc.StatusCode.UNAVAILABLE, str(error))
    if isinstance(error, TimeoutError):
        return _Failure(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"{method} did not finish before the call's deadline (the client's, or "
            "grpc_options.request_timeout_s)",
        )
    logger.error("gRPC request %s (%s) failed", request_id, method, exc_info=error)
    return _Failure(
        grpc.StatusCode.INTERNAL,
        f"{type(error).__name__}: {error} (request id {request_id})",
    )


class GrpcIngress:
    """Owns the replica's grpc.aio server and its dispatch to the user's methods."""

    def __init__(
        self,
        user: UserCallable,
        methods: list[ServiceMethod],
        counter: _Counter,
        request_timeout_s: float | None,
    ) -> None:
        self._user = user
        self._counter = counter
        self._timeout_s = request_timeout_s
        self._takes_context: dict[str, bool] = {}
        handlers = {m.path: self._handler(m) for m in methods if not m.request_streaming}
        handlers.update(_api_service())
        self._server = grpc.aio.server(handlers=[_Dispatch(handlers)])
        self._stopping: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self, host: str, tls: ClusterTLS | None = None) -> int:
        """Listen on a free port; over TLS with the cluster certificate when ``tls``."""
        address = f"[{host}]:0" if ":" in host else f"{host}:0"
        if tls is None:
            self.port = self._server.add_insecure_port(address)
        else:
            pair = (Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())
            credentials = grpc.ssl_server_credentials([pair])
            self.port = self._server.add_secure_port(address, credentials)
        await self._server.start()
        return self.port

    def begin_stop(self, grace_s: float | None) -> None:
        """Refuse new calls at once; in-flight ones may finish within ``grace_s``."""
        if self._stopping is None:
            self._stopping = asyncio.get_running_loop().create_task(
                self._server.stop(grace_s), name="swell-replica-grpc-stop"
            )

    async def wait_stopped(self, grace_s: float | None) -> None:
        self.begin_stop(grace_s)
        assert self._stopping is not None
        await self._stopping

    # Dispatch ------------------------------------------------------------------------------

    def _handler(self, method: ServiceMethod) -> grpc.RpcMethodHandler[Any, Any]:
        if method.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                self._streaming(method.name),
                request_deserializer=method.request_deserializer,
                response_serializer=method.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            self._unary(method.name),
            request_deserializer=method.request_deserializer,
            response_serializer=method.response_serializer,
        )

    def _arguments(self, name: str, context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, Any]:
        """``grpc_context=context`` for a method that declares it, as Ray passes it.

        Raises _Failure(UNIMPLEMENTED) when the deployment has no such method.
        """
        takes = self._takes_context.get(name)
        if takes is None:
            target = getattr(self._user.instance, name, None)
            if (name.startswith("_") and name != "__call__") or not callable(target):
                owner = type(self._user.instance).__name__
                raise _Failure(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"the ingress deployment ({owner}) has no method {name!r} for this RPC",
                )
            try:
                takes = _CONTEXT_PARAMETER in inspect.signature(target).parameters
            except (TypeError, ValueError):
                takes = False
            self._takes_context[name] = takes
        return {_CONTEXT_PARAMETER: context} if takes else {}

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> float | None:
        """Seconds left: the client's deadline or request_timeout_s, whichever is sooner."""
        remaining = context.time_remaining()
        limits = [t for t in (remaining, self._timeout_s) if t is not None]
        return min(limits) if limits else None

    def _unary(self, name: str) -> Callable[[Any, Any], Awaitable[Any]]:
        async def answer(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            request_id = _request_id(context)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            self._counter.ongoing += 1
            try:
                arguments = self._arguments(name, context)
                # A timer, not a task per call: the user's code runs in this handler's task.
                async with asyncio.timeout(self._deadline(context)):
                    return await self._user.call(name, (request,), arguments)
            except grpc.aio.AbortError:
                raise  # the user's own context.abort()
            except _Failure as known:
                failure = known
            except Exception as error:
                failure = _failure_of(error, name, request_id)
            finally:
                self._counter.ongoing -= 1
            await context.abort(failure.code, failure.details)

        return answer

    def _streaming(self, name: str) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def answer(
            request: Any, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            request_id = _request_id(context)
            context.set_trailing_metadata(((REQUEST_ID_KEY, request_id),))
            seconds = self._deadline(context)
            deadline = None if seconds is None else asyncio.get_running_loop().time() + seconds
            self._counter.ongoing += 1
            items: AsyncIterator[Any] | None = None
            try:
                items = self._user.stream(name, (request,), self._arguments(name, context))
                while True:
                    try:
                        async with asyncio.timeout_at(deadline):
                            item = await anext(items)
                    except StopAsyncIteration:
                        return
                    yield item
            except grpc.aio.AbortError:
                raise
            except _Failure as known:
                failure = known
            except Exception as error:
                failure = _failure_of(error, name, request_id)
            finally:
                self._counter.ongoing -= 1
                if items is not None:
                    await items.aclose()  # type: ignore[attr-defined]
            await context.abort(failure.code, failure.details)

        return answer


def _string_field(value: str) -> bytes:
    """Protobuf's encoding of a string in field 1 (all Ray's health messages need)."""
    data = value.encode()
    length = len(data)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        varint.append(byte | (0x80 if length else 0))
        if not length:
            break
    return b"\x0a" + bytes(varint) + data


def _api_service() -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """Ray Serve's RayServeAPIService (Healthz, ListApplications), without generated code:
    both requests are empty and both answers are one string field (repeated for the list)."""

    async def healthz(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        return _string_field("success")

    async def list_applications(
        request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> bytes:
        names = ""
        for key, value in context.invocation_metadata() or ():
            if key == GRPC_APPLICATIONS_HEADER and isinstance(value, str):
                names = value
        return b"".join(_string_field(name) for name in names.split(",") if name)

    return {
        f"/{GRPC_API_SERVICE}/Healthz": grpc.unary_unary_rpc_method_handler(healthz),
        f"/{GRPC_API_SERVICE}/ListApplications": grpc.unary_unary_rpc_method_handler(
            list_applications
        ),
    }


class _Dispatch(grpc.GenericRpcHandler):
    """Finds a method's handler by its full path; unknown paths get UNIMPLEMENTED."""

    def __init__(self, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]) -> None:
        self._handlers = handlers

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        return self._handlers.get(handler_call_details.method)


async def start_grpc_ingress(
    paths: tuple[str, ...],
    user: UserCallable,
    counter: _Counter,
    host: str,
    request_timeout_s: float | None,
    tls: ClusterTLS | None = None,
) -> GrpcIngress:
    """Load the services (a bad path raises ConfigError) and start serving them."""
    ingress = GrpcIngress(user, load_service_methods(paths), counter, request_timeout_s)
    await ingress.start(host, tls)
    return ingress
