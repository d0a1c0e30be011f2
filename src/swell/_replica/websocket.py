"""A WebSocket session in an ingress replica: a client that leaves cancels the handler.

A handler waiting in ``receive()`` learns of the disconnect as usual (Starlette raises
``WebSocketDisconnect``). A handler busy with something else (a handle call, a model) would
not notice until it next sent, so it is cancelled, and its handle calls with it, as an HTTP
handler is when its client goes away. A pump task reads the server's ``receive()`` for that,
a few messages ahead of the handler at most, so a fast sender still meets backpressure.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Messages read ahead of the handler: past it the pump waits, and so does the client.
_READ_AHEAD = 16


class _Session:
    __slots__ = (
        "_handler",
        "_inbox",
        "_receive",
        "_receiving",
        "_send",
        "closed_by_app",
        "disconnected",
    )

    def __init__(self, receive: Receive, send: Send, handler: asyncio.Task[object]) -> None:
        self._receive = receive
        self._send = send
        self._handler = handler
        self._inbox: asyncio.Queue[Message] = asyncio.Queue(_READ_AHEAD)
        self._receiving = 0  # the handler is inside receive(): it gets the disconnect itself
        self.disconnected = False  # the client left while the handler still ran
        self.closed_by_app = False

    async def pump(self) -> None:
        while True:
            message = await self._receive()
            await self._inbox.put(message)
            if message["type"] == "websocket.disconnect":
                if not self.closed_by_app and not self._receiving:
                    self.disconnected = True
                    self._handler.cancel()
                return

    async def receive(self) -> Message:
        self._receiving += 1
        try:
            return await self._inbox.get()
        finally:
            self._receiving -= 1

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.close":
            self.closed_by_app = True
        await self._send(message)


async def serve_websocket(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run ``app`` for one WebSocket session; a client leaving mid-work cancels it."""
    handler = asyncio.current_task()
    assert handler is not None
    session = _Session(receive, send, handler)
    pump = asyncio.get_running_loop().create_task(session.pump(), name="swell-websocket-pump")
    try:
        await app(scope, session.receive, session.send)
    except asyncio.CancelledError:
        if not session.disconnected:
            raise
        handler.uncancel()
    finally:
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
