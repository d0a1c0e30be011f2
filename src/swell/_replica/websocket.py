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
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Messages read ahead of the handler: past it the pump waits, and so does the client.
_READ_AHEAD = 16


class _Session:
    """Hands the server's messages to the handler; knows whether the handler is waiting."""

    __slots__ = (
        "_ended",
        "_handler",
        "_pending",
        "_receive",
        "_room",
        "_send",
        "_waiter",
        "closed_by_app",
        "disconnected",
    )

    def __init__(self, receive: Receive, send: Send, handler: asyncio.Task[object]) -> None:
        self._receive = receive
        self._send = send
        self._handler = handler
        self._pending: deque[Message] = deque()
        self._room = asyncio.Event()
        # Pending while the handler waits inside receive(): the next message goes straight to it.
        self._waiter: asyncio.Future[Message] | None = None
        self._ended: Message | None = None  # the disconnect, answered again to later receives
        self.disconnected = False  # the client left while the handler was busy: cancelled
        self.closed_by_app = False

    async def pump(self) -> None:
        while True:
            while len(self._pending) >= _READ_AHEAD:
                self._room.clear()
                await self._room.wait()
            message = await self._receive()
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                self._waiter = None
                waiter.set_result(message)  # waiting: it sees the disconnect itself
            else:
                self._pending.append(message)
                if message["type"] == "websocket.disconnect":
                    # The handler may just have been handed a message and not run yet: give it
                    # one turn of the loop to come back for the rest before judging it busy.
                    asyncio.get_running_loop().call_soon(self._cancel_if_busy)
            if message["type"] == "websocket.disconnect":
                self._ended = message
                return

    def _cancel_if_busy(self) -> None:
        left_unread = bool(self._pending) and self._pending[-1]["type"] == "websocket.disconnect"
        if left_unread and not self.closed_by_app and not self._handler.done():
            self.disconnected = True
            self._handler.cancel()

    async def receive(self) -> Message:
        if self._pending:
            self._room.set()
            return self._pending.popleft()
        if self._ended is not None:
            return self._ended
        self._waiter = asyncio.get_running_loop().create_future()
        return await self._waiter

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
