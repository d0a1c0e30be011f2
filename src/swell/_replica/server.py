"""The replica's ASGI app: user requests, plus the control paths under ``/-/swell/``.

HAProxy denies ``/-/swell/`` to clients, so only HAProxy's checks and the controller reach it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import sys
import traceback
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from swell._protocol import (
    CLUSTER_TOKEN_HEADER,
    CONTROL_HEALTH_PATH,
    CONTROL_READY_PATH,
    CONTROL_RECONFIGURE_PATH,
    CONTROL_STATS_PATH,
)
from swell._replica.responses import encode_plain
from swell._replica.user_callable import UserCallable
from swell.exceptions import BackPressureError

CONTROL_PREFIX = "/-/swell/"
_WATCH_DISCONNECT_AFTER_S = 0.05

logger = logging.getLogger("swell.replica")


async def _send_plain(send: Send, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _DisconnectGuard:
    """Owns ``receive()`` for one request so a disconnect can cancel its handler.

    The body is read up front and replayed to the handler; after that, the only message left
    is the disconnect, which a watcher task (started only for slow requests) waits for.
    """

    __slots__ = (
        "_body",
        "_event",
        "_handler",
        "_receive",
        "_replayed",
        "_send",
        "_watcher",
        "disconnected",
        "response_done",
    )

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._body = b""
        self._replayed = False
        self._event: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._handler = asyncio.current_task()
        self.disconnected = False
        self.response_done = False

    async def read_body(self) -> bool:
        """False if the client left before its body arrived."""
        chunks = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                return False
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return True

    async def receive(self) -> Message:
        if not self._replayed:
            self._replayed = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        self.start_watching()
        assert self._event is not None
        await self._event.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            self.response_done = True
        await self._send(message)

    def start_watching(self) -> None:
        if self._watcher is None:
            self._event = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        # uvicorn also answers http.disconnect once the response is complete: only a
        # disconnect before that means the client went away.
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self.response_done and self._handler is not None:
            self.disconnected = True
            assert self._event is not None
            self._event.set()
            self._handler.cancel()


class ReplicaASGI:
    """Routes user traffic to the user's code and answers the controller's control paths."""

    def __init__(
        self,
        user: UserCallable,
        route_prefix: str | None,
        ingress_app: Any,
        health_timeout_s: float,
        token: str = "",
    ) -> None:
        self._token = token
        self._user = user
        self._root_path = "" if route_prefix in (None, "/") else route_prefix
        self._ingress_app = ingress_app
        self._health_timeout_s = health_timeout_s
        self.ongoing = 0
        self.draining = False
        self.handle_load: Callable[[], int] = lambda: self.ongoing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            if self._ingress_app is not None:
                await self._ingress_app(scope, receive, send)
            return
        path: str = scope["path"]
        if kind == "http" and path.startswith(CONTROL_PREFIX):
            await self._control(path, scope, receive, send)
            return
        if self._root_path:
            scope["root_path"] = scope.get("root_path", "") + self._root_path
        self.ongoing += 1
        try:
            if kind == "http":
                await self._serve_http(scope, receive, send)
            elif self._ingress_app is not None:
                await self._ingress_app(scope, receive, send)
        finally:
            self.ongoing -= 1

    async def _serve_http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the handler, cancelling it (and its handle calls) if the client goes away."""
        guard = _DisconnectGuard(receive, send)
        if not await guard.read_body():
            return
        loop = asyncio.get_running_loop()
        # Most requests finish long before a client could leave: only those still running
        # after a moment get a watcher task, so fast requests never pay for one.
        timer = loop.call_later(_WATCH_DISCONNECT_AFTER_S, guard.start_watching)
        try:
            if self._ingress_app is not None:
                await self._ingress_app(scope, guard.receive, guard.send)
            else:
                await self._call_user(scope, guard.receive, guard.send)
        except asyncio.CancelledError:
            if not guard.disconnected:
                raise
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
        finally:
            timer.cancel()
            guard.stop_watching()

    async def _reconfigure(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST from the controller only (it carries the cluster token): a new user_config."""
        headers = dict(scope.get("headers", []))
        if scope.get("method") != "POST" or headers.get(CLUSTER_TOKEN_HEADER.encode()) != (
            self._token.encode()
        ):
            await _send_plain(send, 403, b"forbidden", b"text/plain")
            return
        body = await Request(scope, receive).body()
        try:
            await self._user.reconfigure(pickle.loads(body))
        except Exception as error:
            detail = f"{type(error).__name__}: {error}".encode()
            await _send_plain(send, 500, detail, b"text/plain")
            return
        await _send_plain(send, 200, b"ok", b"text/plain")

    async def _call_user(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            result = await self._user.call_http(Request(scope, receive))
            encoded = encode_plain(result)
        except BackPressureError as error:
            await _send_plain(send, 503, str(error).encode(), b"text/plain; charset=utf-8")
            return
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            message = f"Internal Server Error: {type(error).__name__}: {error}".encode()
            await _send_plain(send, 500, message, b"text/plain; charset=utf-8")
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

    async def _control(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == CONTROL_RECONFIGURE_PATH:
            await self._reconfigure(scope, receive, send)
        elif path == CONTROL_READY_PATH:
            status = 503 if self.draining else 200
            await _send_plain(send, status, b"draining" if self.draining else b"ok", b"text/plain")
        elif path == CONTROL_HEALTH_PATH:
            try:
                await self._user.check_health()
            except Exception as error:
                detail = f"{type(error).__name__}: {error}".encode()
                await _send_plain(send, 500, detail, b"text/plain")
                return
            await _send_plain(send, 200, b"ok", b"text/plain")
        elif path == CONTROL_STATS_PATH:
            body = json.dumps(
                {"ongoing": self.ongoing, "load": self.handle_load(), "draining": self.draining}
            ).encode()
            await _send_plain(send, 200, body, b"application/json")
        else:
            await _send_plain(send, 404, b"unknown control path", b"text/plain")
