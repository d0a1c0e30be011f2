"""The replica's control endpoints, served only on its control port.

HAProxy's readiness check and the controller (health, load, reconfigure) talk to this port;
the user-facing port never answers these paths, so no path encoding trick through HAProxy can
reach them. Everything but the readiness check needs the cluster token.
"""

from __future__ import annotations

import gc
import hmac
import json
import logging
import pickle
from collections.abc import Callable
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from swell._metrics.core import REGISTRY
from swell._protocol import (
    CLUSTER_TOKEN_HEADER,
    CONTROL_HEALTH_PATH,
    CONTROL_METRICS_PATH,
    CONTROL_READY_PATH,
    CONTROL_RECONFIGURE_PATH,
    CONTROL_STATS_PATH,
)

logger = logging.getLogger("swell.replica")

_MAX_CONTROL_BODY_BYTES = 64 << 20


class ReplicaUser(Protocol):
    """What the control endpoints need from the user's deployment."""

    async def check_health(self) -> None: ...

    async def reconfigure(self, user_config: Any) -> None: ...


class ReplicaLoad(Protocol):
    ongoing: int
    draining: bool


async def send_plain(send: Send, status: int, body: bytes, content_type: bytes) -> None:
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


class ControlEndpoints:
    """``/-/swell/ready``, ``/health``, ``/stats``, ``/metrics`` and ``/reconfigure`` on the
    control port."""

    def __init__(
        self,
        user: ReplicaUser,
        state: ReplicaLoad,
        token: str,
        handle_load: Callable[[], int],
    ) -> None:
        self._user = user
        self._state = state
        self._token = token.encode()
        self.handle_load = handle_load

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", ()):
            if name == CLUSTER_TOKEN_HEADER.encode():
                return hmac.compare_digest(value, self._token)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == CONTROL_READY_PATH:
            draining = self._state.draining
            await send_plain(
                send, 503 if draining else 200, b"draining" if draining else b"ok", b"text/plain"
            )
            return
        if not self._authorized(scope):
            await send_plain(send, 403, b"the cluster token is required", b"text/plain")
            return
        if path == CONTROL_HEALTH_PATH:
            await self._health(send)
        elif path == CONTROL_STATS_PATH:
            body = json.dumps(
                {
                    "ongoing": self._state.ongoing,
                    "load": self.handle_load(),
                    "draining": self._state.draining,
                }
            ).encode()
            await send_plain(send, 200, body, b"application/json")
        elif path == CONTROL_METRICS_PATH:
            body = json.dumps(REGISTRY.snapshots()).encode()
            await send_plain(send, 200, body, b"application/json")
        elif path == CONTROL_RECONFIGURE_PATH and scope.get("method") == "POST":
            await self._reconfigure(receive, send)
        else:
            await send_plain(send, 404, b"unknown control path", b"text/plain")

    async def _health(self, send: Send) -> None:
        try:
            await self._user.check_health()
        except Exception as error:
            detail = f"{type(error).__name__}: {error}".encode()
            await send_plain(send, 500, detail, b"text/plain")
            return
        await send_plain(send, 200, b"ok", b"text/plain")

    async def _reconfigure(self, receive: Receive, send: Send) -> None:
        """A new user_config from the controller (authenticated above, so safe to unpickle)."""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > _MAX_CONTROL_BODY_BYTES:
                await send_plain(send, 413, b"user_config too large", b"text/plain")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        try:
            # What the constructor built was frozen out of the collector's sight at startup;
            # reconfigure() may drop it (a model replaced): thaw, collect, freeze again, so
            # cycles it leaves behind are freed (one full collection per reconfigure).
            gc.unfreeze()
            try:
                await self._user.reconfigure(pickle.loads(b"".join(chunks)))
            finally:
                gc.collect()
                gc.freeze()
        except Exception as error:
            logger.exception("reconfigure() failed")
            detail = f"{type(error).__name__}: {error}".encode()
            await send_plain(send, 500, detail, b"text/plain")
            return
        await send_plain(send, 200, b"ok", b"text/plain")
