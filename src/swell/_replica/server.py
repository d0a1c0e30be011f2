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

from swell._replica.responses import to_response
from swell._replica.user_callable import UserCallable
from swell.exceptions import BackPressureError

CONTROL_PREFIX = "/-/swell/"
READY_PATH = CONTROL_PREFIX + "ready"
HEALTH_PATH = CONTROL_PREFIX + "health"
STATS_PATH = CONTROL_PREFIX + "stats"
RECONFIGURE_PATH = CONTROL_PREFIX + "reconfigure"
TOKEN_HEADER = "x-swell-token"

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
        """Run the handler, cancelling it (and its handle calls) if the client goes away.

        The body is read first and replayed to the handler, so a watcher can own
        ``receive()`` and learn of a disconnect while the handler runs.
        """
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        disconnected = asyncio.Event()
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        handler = asyncio.current_task()
        assert handler is not None
        response_done = False

        async def tracked_send(message: Message) -> None:
            nonlocal response_done
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done = True
            await send(message)

        async def watch() -> None:
            # uvicorn also answers http.disconnect once the response is complete: only a
            # disconnect before that means the client went away.
            while (await receive())["type"] != "http.disconnect":
                pass
            if not response_done:
                disconnected.set()
                handler.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            if self._ingress_app is not None:
                await self._ingress_app(scope, replay, tracked_send)
            else:
                await self._call_user(scope, replay, tracked_send)
        except asyncio.CancelledError:
            if not disconnected.is_set():
                raise
            handler.uncancel()
        finally:
            watcher.cancel()

    async def _reconfigure(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST from the controller only (it carries the cluster token): a new user_config."""
        headers = dict(scope.get("headers", []))
        if scope.get("method") != "POST" or headers.get(TOKEN_HEADER.encode()) != (
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
            response = to_response(result)
        except BackPressureError as error:
            await _send_plain(send, 503, str(error).encode(), b"text/plain; charset=utf-8")
            return
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            message = f"Internal Server Error: {type(error).__name__}: {error}".encode()
            await _send_plain(send, 500, message, b"text/plain; charset=utf-8")
            return
        await response(scope, receive, send)

    async def _control(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        if path == RECONFIGURE_PATH:
            await self._reconfigure(scope, receive, send)
        elif path == READY_PATH:
            status = 503 if self.draining else 200
            await _send_plain(send, status, b"draining" if self.draining else b"ok", b"text/plain")
        elif path == HEALTH_PATH:
            try:
                await self._user.check_health()
            except Exception as error:
                detail = f"{type(error).__name__}: {error}".encode()
                await _send_plain(send, 500, detail, b"text/plain")
                return
            await _send_plain(send, 200, b"ok", b"text/plain")
        elif path == STATS_PATH:
            body = json.dumps(
                {"ongoing": self.ongoing, "load": self.handle_load(), "draining": self.draining}
            ).encode()
            await _send_plain(send, 200, body, b"application/json")
        else:
            await _send_plain(send, 404, b"unknown control path", b"text/plain")
