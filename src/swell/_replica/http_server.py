"""The replica's HTTP server: listeners, lifespan, WebSocket hand-over, keep-alive, drain.

Requests are served by :mod:`swell._replica.http1`; a WebSocket upgrade is handed to uvicorn's
WebSocket protocol (the ``websockets`` library underneath), which swell does not rewrite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

from swell._replica.http1 import H1Connection

logger = logging.getLogger("swell.replica.http")

Message = dict[str, Any]
_SWEEP_INTERVAL_S = 1.0


class LifespanFailed(Exception):
    """The app's lifespan startup failed; the message says why."""


class ServerState:
    """What every connection of one server shares."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.connections: set[H1Connection] = set()
        self.app_state: dict[str, Any] = {}
        self._ws_configs: dict[int, Any] = {}  # uvicorn's Config per WebSocket app, by id
        self._ws_state: Any = None

    def upgrade_to_websocket(self, conn: H1Connection, app: Any) -> None:
        """Hand the connection to uvicorn's WebSocket protocol, replaying the request's head."""
        import uvicorn
        from uvicorn.server import ServerState as UvicornState

        config: Any = self._ws_configs.get(id(app))
        if config is None:
            config = self._ws_configs[id(app)] = uvicorn.Config(
                app,
                ws="websockets",
                lifespan="off",
                log_config=None,
                proxy_headers=False,
                server_header=False,
                date_header=False,
            )
            config.load()
        if self._ws_state is None:
            self._ws_state = UvicornState()
        self.connections.discard(conn)
        transport = conn.transport
        assert transport is not None
        protocol = config.ws_protocol_class(
            config=config, server_state=self._ws_state, app_state=self.app_state
        )
        protocol.connection_made(transport)
        protocol.data_received(conn.raw_request_head())
        transport.set_protocol(protocol)

    def websocket_connections(self) -> list[Any]:
        return list(self._ws_state.connections) if self._ws_state is not None else []

    def websocket_tasks(self) -> list[asyncio.Task[Any]]:
        return list(self._ws_state.tasks) if self._ws_state is not None else []


class Lifespan:
    """Runs the app's ASGI lifespan: startup before listening, shutdown after the drain."""

    def __init__(self, app: Callable[..., Any], state: dict[str, Any]) -> None:
        self._app = app
        self._state = state
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._startup: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._shutdown: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._task: asyncio.Task[None] | None = None

    async def startup(self) -> None:
        self._task = asyncio.create_task(self._run(), name="swell-lifespan")
        await self._inbox.put({"type": "lifespan.startup"})
        failure = await self._startup
        if failure is not None:
            raise LifespanFailed(failure)

    async def shutdown(self, timeout_s: float | None) -> None:
        if self._task is None or self._task.done():
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        try:
            failure = await asyncio.wait_for(asyncio.shield(self._shutdown), timeout_s)
        except TimeoutError:
            logger.error("the app's lifespan shutdown did not finish in %s s", timeout_s)
            self._task.cancel()
            return
        if failure is not None:
            logger.error("the app's lifespan shutdown failed: %s", failure)

    async def _run(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self._state,
        }
        try:
            await self._app(scope, self._inbox.get, self._send)
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}"
            if not self._startup.done():
                logger.error("the app's lifespan startup raised", exc_info=error)
                self._startup.set_result(reason)
            elif not self._shutdown.done():
                logger.error("the app's lifespan shutdown raised", exc_info=error)
                self._shutdown.set_result(reason)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            for future in (self._startup, self._shutdown):
                if not future.done():
                    future.set_result(None)

    async def _send(self, message: Message) -> None:
        kind = message["type"]
        if kind == "lifespan.startup.complete":
            self._startup.set_result(None)
        elif kind == "lifespan.startup.failed":
            self._startup.set_result(message.get("message") or "lifespan.startup.failed")
        elif kind == "lifespan.shutdown.complete":
            self._shutdown.set_result(None)
        elif kind == "lifespan.shutdown.failed":
            self._shutdown.set_result(message.get("message") or "lifespan.shutdown.failed")


class HTTPServer:
    """Serves ASGI apps on already bound sockets, one app per socket."""

    def __init__(
        self,
        *,
        keep_alive_s: float,
        ssl_context: ssl.SSLContext | None = None,
        lifespan_app: Callable[..., Any] | None = None,
    ) -> None:
        self._keep_alive_s = keep_alive_s
        self._ssl = ssl_context
        self._lifespan_app = lifespan_app
        self._servers: list[asyncio.AbstractServer] = []
        self._state: ServerState | None = None
        self._lifespan: Lifespan | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._stopping = asyncio.Event()

    async def start(self, listeners: list[tuple[socket.socket, Callable[..., Any], bool]]) -> None:
        """Run lifespan startup (raises LifespanFailed), then listen on every socket, each
        with its app and whether that app also takes WebSocket upgrades."""
        loop = asyncio.get_running_loop()
        state = self._state = ServerState(loop)
        if self._lifespan_app is not None:
            self._lifespan = Lifespan(self._lifespan_app, state.app_state)
            await self._lifespan.startup()
        for sock, app, websockets in listeners:
            sock.setblocking(False)

            def factory(
                app: Callable[..., Any] = app, websockets: bool = websockets
            ) -> H1Connection:
                return H1Connection(state, app, websockets)

            server = await loop.create_server(factory, sock=sock, ssl=self._ssl, backlog=2048)
            self._servers.append(server)
        self._sweeper = loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    def _sweep(self) -> None:
        """Close connections idle past the keep-alive timeout (one timer per server)."""
        state = self._state
        assert state is not None
        cutoff = state.loop.time() - self._keep_alive_s
        for conn in list(state.connections):
            if conn.idle_since is not None and conn.idle_since < cutoff:
                conn.close()
        self._sweeper = state.loop.call_later(_SWEEP_INTERVAL_S, self._sweep)

    def begin_shutdown(self) -> None:
        """Stop accepting; idle connections close now, busy ones after their response."""
        self._stopping.set()

    async def serve_until_shutdown(self, graceful_timeout_s: float | None) -> None:
        """Wait for begin_shutdown, drain within the grace period, then run lifespan shutdown."""
        await self._stopping.wait()
        state = self._state
        assert state is not None
        for server in self._servers:
            server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in list(state.connections):
            conn.begin_shutdown()
        for ws in state.websocket_connections():
            ws.shutdown()
        try:
            await asyncio.wait_for(self._drained(state), graceful_timeout_s)
        except TimeoutError:
            logger.warning(
                "requests still running after graceful_shutdown_timeout_s (%s s): cancelled",
                graceful_timeout_s,
            )
            for conn in list(state.connections):
                conn.cancel_request()
                conn.close()
            for task in state.websocket_tasks():
                task.cancel()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        if self._lifespan is not None:
            await self._lifespan.shutdown(graceful_timeout_s)

    async def _drained(self, state: ServerState) -> None:
        while state.connections or state.websocket_connections() or state.websocket_tasks():
            await asyncio.sleep(0.02)
