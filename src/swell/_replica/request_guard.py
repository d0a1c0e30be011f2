"""One HTTP request's ``receive()``: the body streams to the handler, capped in size, and a
client that goes away cancels the handler (and, through it, its handle calls).

The handler reads the server's ``receive`` directly while its body arrives, so a handler that
reads ``request.stream()`` gets chunks as they come and nothing is buffered here. Only a
request still running after a moment gets a watcher task for the disconnect; from then on the
watcher owns the server's ``receive`` and hands the handler whatever body is left.
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import Message, Receive, Send

_DISCONNECT: Message = {"type": "http.disconnect"}
# Body the watcher reads ahead of a slow handler before it waits for the handler to catch up.
_READ_AHEAD_BYTES = 1 << 20


class RequestBodyTooLarge(Exception):
    """The body grew past ``http_options.max_request_body_bytes``: answered with 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"the request body is larger than {limit} bytes (http_options.max_request_body_bytes)"
        )
        self.limit = limit


class RequestGuard:
    """Owns ``receive()`` and ``send()`` for one request; see the module docstring."""

    __slots__ = (
        "_body_bytes",
        "_body_done",
        "_handler",
        "_limit",
        "_pending",
        "_pending_bytes",
        "_reading",
        "_receive",
        "_send",
        "_wake",
        "_watch_requested",
        "_watcher",
        "disconnected",
        "response_done",
        "response_started",
        "status",
    )

    def __init__(self, receive: Receive, send: Send, limit: int | None) -> None:
        self._receive = receive
        self._send = send
        self._limit = limit
        self._body_bytes = 0
        self._body_done = False
        self._handler = asyncio.current_task()
        self._pending: deque[Message] = deque()
        self._pending_bytes = 0
        self._reading = False
        self._watch_requested = False
        self._wake: asyncio.Event | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_done = False
        self.status = 0  # the response's status, once it started (metrics, access log)

    # The handler's side -------------------------------------------------------------------

    async def receive(self) -> Message:
        if self._watcher is None:
            self._reading = True
            try:
                message = await self._receive()
            finally:
                self._reading = False
                # Also when this receive was cancelled (an app's own disconnect listener,
                # stopped once its work is done): else no watcher would ever start.
                if self._watch_requested:
                    self._start_watcher()
        else:
            message = await self._from_watcher()
        return self._count(message)

    async def _from_watcher(self) -> Message:
        wake = self._wake
        assert wake is not None
        while not self._pending and not self.disconnected:
            wake.clear()
            await wake.wait()
        if not self._pending:
            return _DISCONNECT
        message = self._pending.popleft()
        self._pending_bytes -= len(message.get("body", b""))
        wake.set()  # the watcher may be waiting for room
        return message

    def _count(self, message: Message) -> Message:
        if message["type"] == "http.request":
            self._body_bytes += len(message.get("body", b""))
            if self._limit is not None and self._body_bytes > self._limit:
                raise RequestBodyTooLarge(self._limit)
            if not message.get("more_body", False):
                self._body_done = True
        return message

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise OSError("the client disconnected")  # ASGI 2.4's send after a disconnect
        kind = message["type"]
        if kind == "http.response.start":
            self.response_started = True
            self.status = message["status"]
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.response_done = True
        try:
            await self._send(message)
        except OSError:
            self.disconnected = True  # the server found the client gone first
            raise

    # The watcher --------------------------------------------------------------------------

    def start_watching(self) -> None:
        """Called by a timer once the request has run for a moment."""
        if self._watcher is not None or self.response_done:
            return
        if self._reading:
            self._watch_requested = True  # the handler is inside receive(): start after it
            return
        self._start_watcher()

    def _start_watcher(self) -> None:
        self._watch_requested = False
        if self._watcher is None:
            self._wake = asyncio.Event()
            self._watcher = asyncio.get_running_loop().create_task(self._watch())

    def stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()

    async def _watch(self) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            while self._pending_bytes >= _READ_AHEAD_BYTES:
                wake.clear()
                await wake.wait()
            message = await self._receive()
            if message["type"] != "http.disconnect":
                self._pending.append(message)
                self._pending_bytes += len(message.get("body", b""))
                wake.set()
                continue
            # uvicorn also answers http.disconnect once the response is complete: only a
            # disconnect before that means the client went away.
            if not self.response_done:
                self.disconnected = True
                wake.set()
                if self._handler is not None:
                    self._handler.cancel()
            return
