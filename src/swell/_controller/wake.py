"""The wake-up server: HAProxy's backup server for every app, for scale from zero.

When an app's ingress has no replica (``min_replicas: 0``), HAProxy sends its requests here
instead of answering 503. Each request counts as demand, which makes the autoscaler start a
replica at once; the request waits (up to the queue timeout) until that replica runs, and is
then passed to it. Once replicas are up HAProxy sends nothing here: this hop is paid only by
the requests that arrive while the app is cold.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import httpx
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from swell._cluster_tls import ClusterTLS, client_limits

_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "proxy-connection"}
)


class WakeBackend(Protocol):
    def app_for_path(self, path: str) -> str | None: ...

    def note_waiting(self, app_name: str, delta: int) -> None: ...

    async def wait_for_ingress_replica(self, app_name: str, timeout_s: float) -> str | None: ...


class WakeServer:
    """An ASGI app that holds cold requests until a replica exists, then forwards them."""

    def __init__(
        self, backend: WakeBackend, timeout_s: float, tls: ClusterTLS | None = None
    ) -> None:
        """``tls``: replicas listen with TLS; verify them against the cluster CA."""
        self._backend = backend
        self._timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            timeout=None, verify=tls.client_context() if tls else True, limits=client_limits(tls)
        )
        self._scheme = "https" if tls else "http"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._forward(request)
        except ClientDisconnect:
            return  # the client gave up while its request waited: no one to answer
        await response(scope, receive, send)

    async def _forward(self, request: Request) -> Response:
        app_name = self._backend.app_for_path(request.url.path)
        if app_name is None:
            return PlainTextResponse("No application is served at this path.", 404)
        self._backend.note_waiting(app_name, 1)
        try:
            address = await self._backend.wait_for_ingress_replica(app_name, self._timeout_s)
        finally:
            self._backend.note_waiting(app_name, -1)
        if address is None:
            return PlainTextResponse(
                f"No replica of application '{app_name}' started within {self._timeout_s}s.",
                503,
            )
        upstream = self._client.build_request(
            request.method,
            f"{self._scheme}://{address}{request.url.path}",
            params=request.query_params,
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS],
            content=await request.body(),
        )
        answer = await self._client.send(upstream, stream=True)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_HEADERS}
        return StreamingResponse(body(), status_code=answer.status_code, headers=headers)
