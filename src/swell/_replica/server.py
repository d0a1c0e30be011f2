"""The replica's ASGI app: user requests, plus the control paths under ``/-/swell/``.

HAProxy denies ``/-/swell/`` to clients, so only HAProxy's checks and the controller reach it.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from typing import Any

from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from swell._replica.responses import to_response
from swell._replica.user_callable import UserCallable

CONTROL_PREFIX = "/-/swell/"
READY_PATH = CONTROL_PREFIX + "ready"
HEALTH_PATH = CONTROL_PREFIX + "health"
STATS_PATH = CONTROL_PREFIX + "stats"

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
    ) -> None:
        self._user = user
        self._root_path = "" if route_prefix in (None, "/") else route_prefix
        self._ingress_app = ingress_app
        self._health_timeout_s = health_timeout_s
        self.ongoing = 0
        self.draining = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            if self._ingress_app is not None:
                await self._ingress_app(scope, receive, send)
            return
        path: str = scope["path"]
        if kind == "http" and path.startswith(CONTROL_PREFIX):
            await self._control(path, send)
            return
        if self._root_path:
            scope["root_path"] = scope.get("root_path", "") + self._root_path
        self.ongoing += 1
        try:
            if self._ingress_app is not None:
                await self._ingress_app(scope, receive, send)
            elif kind == "http":
                await self._call_user(scope, receive, send)
        finally:
            self.ongoing -= 1

    async def _call_user(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            result = await self._user.call_http(Request(scope, receive))
            response = to_response(result)
        except Exception as error:
            traceback.print_exc(file=sys.stderr)
            message = f"Internal Server Error: {type(error).__name__}: {error}".encode()
            await _send_plain(send, 500, message, b"text/plain; charset=utf-8")
            return
        await response(scope, receive, send)

    async def _control(self, path: str, send: Send) -> None:
        if path == READY_PATH:
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
            body = json.dumps({"ongoing": self.ongoing, "draining": self.draining}).encode()
            await _send_plain(send, 200, body, b"application/json")
        else:
            await _send_plain(send, 404, b"unknown control path", b"text/plain")
