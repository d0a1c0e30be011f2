"""The replica's ASGI app for user requests, and the control app beside it.

The replica's server serves ``ReplicaASGI`` on the user port and ``ReplicaASGI.control`` on
the control port (see ``main.py``), so the user port never answers a control path, however
the path is spelled. The ingress app's lifespan is run by the server itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from swell._context import multiplexed_model_id
from swell._logging.access import AccessLog
from swell._metrics.process import PROCESS
from swell._protocol import MULTIPLEXED_MODEL_ID_HEADER, REQUEST_ID_HEADER, ROUTE_PREFIX_HEADER
from swell._replica.control import ControlEndpoints, send_plain
from swell._replica.request_guard import RequestBodyTooLarge, RequestGuard
from swell._replica.responses import encode_plain
from swell._replica.slow_requests import SlowRequests
from swell._replica.user_callable import UserCallable
from swell._replica.websocket import serve_websocket
from swell.context import _RequestContext, _set_request_context
from swell.exceptions import BackPressureError, ReplicaUnavailableError

_WATCH_DISCONNECT_AFTER_S = 0.05
_TEXT = b"text/plain; charset=utf-8"
_ROUTE_PREFIX_KEY = ROUTE_PREFIX_HEADER.encode()
_REQUEST_ID_KEY = REQUEST_ID_HEADER.encode()
_MODEL_ID_KEY = MULTIPLEXED_MODEL_ID_HEADER.encode()

logger = logging.getLogger("swell.replica")


def request_id_of(scope: Scope) -> str:
    """The id HAProxy gave the request (or the client sent); a new one if there is none."""
    for name, value in scope.get("headers", ()):
        if name == _REQUEST_ID_KEY:
            text: str = value.decode("latin-1")
            return text[:128]
    return uuid.uuid4().hex


class ReplicaASGI:
    """Routes user traffic to the user's code, and control-port traffic to the control app."""

    def __init__(
        self,
        user: UserCallable,
        route_prefix: str | None,
        ingress_app: Any,
        token: str,
        max_body_bytes: int | None = None,
        app_name: str = "",
        access_log: AccessLog | None = None,
    ) -> None:
        self._user = user
        self._app_name = app_name
        self._access_log = access_log
        self._default_root_path = "" if route_prefix in (None, "/") else route_prefix
        self._ingress_app = ingress_app
        self._max_body_bytes = max_body_bytes
        self.ongoing = 0
        self.draining = False
        # Most requests finish long before a client could leave: only those still running
        # after a moment get a watcher task, so fast requests never pay for one (nor for a
        # timer of their own).
        self.slow = SlowRequests(_WATCH_DISCONNECT_AFTER_S)
        self.control = ControlEndpoints(user, self, token, lambda: self.ongoing)

    @property
    def handle_load(self) -> Callable[[], int]:
        return self.control.handle_load

    @handle_load.setter
    def handle_load(self, load: Callable[[], int]) -> None:
        self.control.handle_load = load

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        # The three headers swell reads, in one pass over the list (not one pass each).
        request_id = prefix = None
        for name, value in scope.get("headers", ()):
            if name == _REQUEST_ID_KEY:
                request_id = value
            elif name == _ROUTE_PREFIX_KEY:
                prefix = value
            elif name == _MODEL_ID_KEY:
                # As in Ray, any deployment may ask for it; the value ends with the request.
                multiplexed_model_id.set(value.decode("latin-1"))
        if prefix is None:
            root_path = self._default_root_path
        else:  # the app's route prefix as HAProxy sent it (it can change live)
            root_path = "" if prefix == b"/" else prefix.decode("latin-1")
        if root_path:
            scope["root_path"] = scope.get("root_path", "") + root_path
        # This request's task is its own: the context is the request's alone.
        _set_request_context(
            _RequestContext(
                root_path or "/",
                uuid.uuid4().hex if request_id is None else request_id.decode("latin-1")[:128],
                self._app_name,
                True,
            )
        )
        self.ongoing += 1
        try:
            if kind == "http":
                await self._serve_http(scope, receive, send, root_path or "/")
            elif kind == "websocket" and self._ingress_app is not None:
                await serve_websocket(self._ingress_app, scope, receive, send)
            elif self._ingress_app is not None:
                await self._ingress_app(scope, receive, send)
        finally:
            self.ongoing -= 1

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send, route: str) -> None:
        """Run the handler, cancelling it (and its handle calls) if the client goes away."""
        started = time.perf_counter()
        guard = RequestGuard(receive, send, self._max_body_bytes)
        # ASGI 2.4: the guard's send raises OSError once the client is gone (and its watcher
        # cancels the handler), so a StreamingResponse needs no disconnect listener task of its
        # own per response (Starlette starts one, with a task group, below 2.4).
        asgi = scope.get("asgi")
        if asgi is None or asgi.get("spec_version") != "2.4":
            scope["asgi"] = {**(asgi or {}), "spec_version": "2.4"}
        slow = self.slow
        slow.note(guard, started, guard.start_watching)
        status: int | str = 0
        try:
            if self._ingress_app is not None:
                await self._ingress_app(scope, guard.receive, guard.send)
            else:
                await self._call_user(scope, guard.receive, guard.send)
        except asyncio.CancelledError:
            if not guard.disconnected:
                raise
            status = "CANCELLED"
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        except RequestBodyTooLarge as error:
            if not guard.response_started:
                await send_plain(guard.send, 413, str(error).encode(), _TEXT)
        except Exception:
            if guard.disconnected:
                return  # the client went away mid-response: nothing to answer, nobody to tell
            await self._internal_error(scope, guard)
        finally:
            slow.done(guard)
            guard.stop_watching()
            # No status: the client left first (499, as nginx and Ray Serve count it).
            code = guard.status or (499 if guard.disconnected else 500)
            PROCESS.http_done(route, scope["method"], code, time.perf_counter() - started)
            if self._access_log is not None:
                self._access_log.http(
                    scope["method"], scope["path"], guard.status or status, started
                )

    async def _internal_error(self, scope: Scope, guard: RequestGuard) -> None:
        """Log the detail with the request id; the client gets the id, never the internals."""
        request_id = request_id_of(scope)
        logger.exception("request %s failed", request_id)  # the line carries the id too
        if not guard.response_started:
            body = f"Internal Server Error (request id {request_id})".encode()
            await send_plain(guard.send, 500, body, _TEXT)

    async def _call_user(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            result = await self._user.call_http(Request(scope, receive))
            encoded = encode_plain(result)
        except (BackPressureError, ReplicaUnavailableError) as error:
            # Overloaded, or a replica it called died mid-call: 503, which HAProxy retries on
            # another ingress replica when the method is idempotent.
            message = f"{error} (request id {request_id_of(scope)})"
            await send_plain(send, 503, message.encode(), _TEXT)
            return
        if encoded is None:
            await result(scope, receive, send)
            return
        headers, body = encoded
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})
