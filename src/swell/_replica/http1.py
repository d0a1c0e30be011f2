"""One HTTP/1.1 connection into a replica, parsed by httptools, served to an ASGI app.

Why not uvicorn: a replica serves one kind of client (HAProxy's pooled keep-alive connections),
and uvicorn's general-purpose path cost more CPU per request than the app it served. This one
does less per request:

- The status line and headers are held back until the first body message, so a response
  whose body comes in one message leaves in one write, with a ``content-length`` computed
  here when the app gave none (no chunked framing).
- Body chunks a handler sends without suspending (a generator yielding ready tokens) are
  corked until the loop's next turn and leave in one write; nothing waits on a timer.
- No timer per request: idle keep-alive connections are closed by the server's sweep.
- ``receive()`` allocates a future only when it has to wait.

ASGI ``spec_version`` 2.4: once the client has gone, ``send()`` raises ``OSError``.
"""

from __future__ import annotations

import asyncio
import http
import logging
import re
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from swell._replica.http_server import ServerState

Message = dict[str, Any]

logger = logging.getLogger("swell.replica.http")

# Request body buffered ahead of the app before the connection stops reading.
_BODY_HIGH_WATER = 1 << 16
# Body bytes corked within one turn of the loop before they are written at once.
_CORK_LIMIT = 1 << 16
# A request's line and headers together; past this the client gets 431 and the connection ends.
_MAX_HEAD_BYTES = 1 << 16

# Response header names are tokens; values carry no control characters but tab (RFC 9110).
_BAD_NAME = re.compile(b'[\x00-\x20\x7f()<>@,;:\\[\\]={}\\\\"/?]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")

_NO_BODY_STATUSES = frozenset({204, 304})
_ASGI = {"version": "3.0", "spec_version": "2.4"}
_DISCONNECT: Message = {"type": "http.disconnect"}
_EMPTY_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode("latin-1")


_STATUS_LINES = {status.value: _status_line(status.value) for status in http.HTTPStatus}


class ClientDisconnected(OSError):
    """``send()`` after the client has gone (ASGI 2.4 has the server raise an ``OSError``)."""


class RequestCycle:
    """One request and its response on a connection."""

    __slots__ = (
        "_body",
        "_body_bytes",
        "_body_done",
        "_chunked",
        "_conn",
        "_expect_continue",
        "_head",
        "_keep_alive",
        "_more_body",
        "_waiter",
        "disconnected",
        "response_complete",
        "response_started",
        "scope",
        "status",
    )

    def __init__(
        self, conn: H1Connection, scope: Message, expect_continue: bool, keep_alive: bool
    ) -> None:
        self._conn = conn
        self.scope = scope
        self._body: list[bytes] = []
        self._body_bytes = 0
        self._more_body = True
        self._body_done = False
        self._waiter: asyncio.Future[None] | None = None
        self._expect_continue = expect_continue
        self._head: list[bytes] | None = None  # status line and headers, not yet written
        self._chunked = False
        self._keep_alive = keep_alive
        self.status = 0
        self.disconnected = False
        self.response_started = False
        self.response_complete = False

    # What the connection feeds in ----------------------------------------------------------

    def body_arrived(self, chunk: bytes) -> None:
        self._body.append(chunk)
        self._body_bytes += len(chunk)
        if self._body_bytes > _BODY_HIGH_WATER:
            self._conn.pause_reading()
        self._wake()

    def body_complete(self) -> None:
        self._more_body = False
        self._wake()

    def lost(self) -> None:
        self.disconnected = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    # The app's side ------------------------------------------------------------------------

    async def receive(self) -> Message:
        if self._expect_continue:
            self._expect_continue = False
            if not self.response_started and not self.disconnected:
                self._conn.write(_CONTINUE)
        while True:
            if self.disconnected or self.response_complete:
                return _DISCONNECT
            if self._body:
                body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
                self._body.clear()
                self._body_bytes = 0
                self._conn.resume_reading()
                more = self._more_body
                self._body_done = not more
                return {"type": "http.request", "body": body, "more_body": more}
            if not self._more_body and not self._body_done:
                self._body_done = True
                return _EMPTY_BODY
            # Wait for more body, or (the body all handed over) for the end of the response.
            waiter = self._conn.loop.create_future()
            self._waiter = waiter
            await waiter

    async def send(self, message: Message) -> None:
        if self.disconnected:
            raise ClientDisconnected("the client has disconnected")
        kind = message["type"]
        if kind == "http.response.body":
            if self.response_complete:
                raise RuntimeError("the response is already complete")
            head = self._head
            if head is None and not self.response_started:
                raise RuntimeError("http.response.body before http.response.start")
            body: bytes = message.get("body", b"")
            more = message.get("more_body", False)
            out = self._frame(head, body, more)
            conn = self._conn
            if more:
                if out:
                    conn.cork(out)
                if conn.write_paused:
                    await conn.drained()
                return
            conn.write(out)
            self._complete()
            return
        if kind == "http.response.start":
            if self.response_started:
                raise RuntimeError("http.response.start sent twice")
            self._start(message)
            return
        raise RuntimeError(f"unexpected ASGI message type {kind!r} for an HTTP response")

    # Response framing ----------------------------------------------------------------------

    def _start(self, message: Message) -> None:
        status = int(message["status"])
        head = [_STATUS_LINES.get(status) or _status_line(status)]
        framed = chunked = False
        keep_alive = self._keep_alive
        for name, value in message.get("headers", ()):
            name = name.lower()
            if _BAD_NAME.search(name) or _BAD_VALUE.search(value):
                raise RuntimeError(f"invalid response header {name!r}: {value!r}")
            if name == b"content-length":
                framed = True
            elif name == b"transfer-encoding":
                framed = True
                chunked = value.lower().strip() == b"chunked"
            elif name == b"connection" and value.lower().strip() == b"close":
                keep_alive = False
            head += (name, b": ", value, b"\r\n")
        if not framed:
            head.append(b"")  # a slot for the framing header, decided with the first body
        self.status = status
        self.response_started = True
        self._expect_continue = False
        self._chunked = chunked
        self._keep_alive = keep_alive
        self._head = head

    def _frame(self, head: list[bytes] | None, body: bytes, more: bool) -> bytes:
        """The bytes to write for one body message, the head included if it is still held."""
        if self.scope["method"] == "HEAD" or self.status in _NO_BODY_STATUSES:
            body = b""
            self._chunked = False
            if head is not None and head[-1] == b"":
                head.pop()  # no body follows, so no framing header to promise
        elif head is not None and head[-1] == b"":
            if not more:
                head[-1] = b"content-length: %d\r\n" % len(body)
            elif self.scope["http_version"] == "1.0":
                head.pop()  # HTTP/1.0 has no chunked framing: the body ends with the connection
                self._keep_alive = False
            else:
                head[-1] = b"transfer-encoding: chunked\r\n"
                self._chunked = True
        if self._chunked:
            if body:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        if head is None:
            return body
        self._head = None
        if self._more_body and not more:
            self._keep_alive = False  # answered before its body arrived: the rest is not read
        if not self._keep_alive or self._conn.closing:
            self._keep_alive = False
            head.append(b"connection: close\r\n")
        head.append(b"\r\n")
        head.append(body)
        return b"".join(head)

    def _complete(self) -> None:
        if self._more_body:
            self._keep_alive = False  # answered before its body arrived: the rest is not read
        self.response_complete = True
        self._wake()
        self._conn.cycle_done(self, self._keep_alive)

    def fail(self) -> None:
        """The app raised or returned early: a 500 if nothing was sent (a held head is dropped:
        it never left), else end the connection."""
        if self.response_complete or self.disconnected:
            return
        if not self.response_started or self._head is not None:
            self._head = None
            body = b"Internal Server Error"
            self._conn.write(
                _STATUS_LINES[500] + b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(body), body)
            )
            self.response_started = True
            self.status = 500
            self._keep_alive = False
            self._complete()
            return
        self._keep_alive = False
        self.response_complete = True
        self._wake()
        self._conn.close()


class H1Connection(asyncio.Protocol):
    """Parses requests off one connection and runs each in its own task, one at a time."""

    def __init__(self, state: ServerState, app: Callable[..., Any], websockets: bool) -> None:
        self._state = state
        self._app = app
        self._websockets = websockets  # upgrades go to ``app`` too
        self.loop = state.loop
        self._parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        self._scheme = "http"
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._cycle: RequestCycle | None = None  # the request being parsed
        self._running: RequestCycle | None = None  # the request the app is serving
        self._queued: deque[RequestCycle] = deque()  # pipelined requests, parsed, not started
        self._task: asyncio.Task[None] | None = None
        self._cork: list[bytes] = []
        self._cork_bytes = 0
        self._flush_scheduled = False
        self._reading_paused = False
        self.write_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._closing = False
        self._upgrade = False
        self.idle_since: float | None = None

    # asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        server = transport.get_extra_info("sockname")
        client = transport.get_extra_info("peername")
        self._server = (str(server[0]), int(server[1])) if server else None
        self._client = (str(client[0]), int(client[1])) if client else None
        if transport.get_extra_info("sslcontext") is not None:
            self._scheme = "https"
        self.idle_since = self.loop.time()
        self._state.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._state.connections.discard(self)
        self._closing = True
        for cycle in (self._running, *self._queued):
            if cycle is not None:
                cycle.lost()
        self._queued.clear()
        if self._cycle is not None:
            self._cycle.lost()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._upgrade:
                self._state.upgrade_to_websocket(self, self._app)
                return
            # Not an upgrade swell speaks (h2c, say): served as HTTP/1.1, then the connection
            # ends, since what follows the head is in the other protocol.
            self.pause_reading()
            self._closing = True
            cycle = self._cycle
            if cycle is not None:
                self._cycle = None
                cycle.body_complete()
        except httptools.HttpParserError as error:
            if self._head_bytes > _MAX_HEAD_BYTES:
                self._reject(431, b"Request header fields too large")
            else:
                self._reject(400, f"Invalid HTTP request: {error}".encode())

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    # httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_bytes = 0
        self.idle_since = None

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise ValueError("request head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_bytes += len(name) + len(value)
        if self._head_bytes > _MAX_HEAD_BYTES:
            raise ValueError("request head too large")
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        url = self._url
        if b"?" in url or b"%" in url or not url.startswith(b"/"):
            parsed = httptools.parse_url(url)
            raw_path: bytes = parsed.path
            query: bytes = parsed.query or b""
            path = raw_path.decode("ascii")
            if "%" in path:
                path = urllib.parse.unquote(path)
        else:
            raw_path = url
            query = b""
            path = url.decode("ascii")
        method = parser.get_method().decode("ascii")
        expect_continue = False
        if parser.should_upgrade():
            self._upgrade = self._websockets and _is_websocket(self._headers)
            if self._upgrade:
                return
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                expect_continue = True
        scope: Message = {
            "type": "http",
            "asgi": _ASGI,
            "http_version": parser.get_http_version(),
            "server": self._server,
            "client": self._client,
            "scheme": self._scheme,
            "method": method,
            "root_path": "",
            "path": path,
            "raw_path": raw_path,
            "query_string": query,
            "headers": self._headers,
            "state": self._state.app_state.copy(),
        }
        cycle = RequestCycle(self, scope, expect_continue, parser.should_keep_alive())
        self._cycle = cycle
        if self._running is None:
            self._run(cycle)
        else:  # pipelined behind a request still being served
            self._queued.append(cycle)
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        cycle = self._cycle
        if cycle is not None and not cycle.response_complete:
            cycle.body_arrived(body)

    def on_message_complete(self) -> None:
        cycle = self._cycle
        if cycle is not None:
            self._cycle = None
            cycle.body_complete()

    # Serving -------------------------------------------------------------------------------

    def _run(self, cycle: RequestCycle) -> None:
        self._running = cycle
        self._task = self.loop.create_task(self._serve(cycle))

    async def _serve(self, cycle: RequestCycle) -> None:
        try:
            await self._app(cycle.scope, cycle.receive, cycle.send)
        except BaseException as error:
            if not isinstance(error, asyncio.CancelledError) and not cycle.disconnected:
                logger.error("the ASGI app failed", exc_info=error)
            cycle.fail()
            if isinstance(error, asyncio.CancelledError):
                raise
        else:
            if not cycle.response_complete and not cycle.disconnected:
                logger.error("the ASGI app returned without completing its response")
                cycle.fail()

    @property
    def closing(self) -> bool:
        return self._closing

    def cycle_done(self, cycle: RequestCycle, keep_alive: bool) -> None:
        if cycle is not self._running:
            return
        self._running = None
        self._task = None
        if not keep_alive or self._closing:
            self.close()
            return
        if self._queued:
            self._run(self._queued.popleft())
            if not self._queued:
                self.resume_reading()
            return
        self.idle_since = self.loop.time()
        self.resume_reading()

    @property
    def busy(self) -> bool:
        return self._running is not None or self._cycle is not None

    def begin_shutdown(self) -> None:
        """Finish the request in hand (if any), then close; an idle connection closes now."""
        self._closing = True
        if not self.busy:
            self.close()

    def cancel_request(self) -> None:
        if self._task is not None:
            self._task.cancel()

    # Writing -------------------------------------------------------------------------------

    def cork(self, data: bytes) -> None:
        """Queue bytes to leave with whatever else is sent before the loop's next turn."""
        self._cork.append(data)
        self._cork_bytes += len(data)
        if self._cork_bytes > _CORK_LIMIT:
            self._flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._cork:
            data = b"".join(self._cork)
            self._cork.clear()
            self._cork_bytes = 0
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(data)

    def write(self, data: bytes) -> None:
        if self._cork:
            self._cork.append(data)
            self._flush()
            return
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    async def drained(self) -> None:
        if self._drain is None:
            self._drain = self.loop.create_future()
        await self._drain

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self._queued:
            self._reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self._flush()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _reject(self, status: int, reason: bytes) -> None:
        if self._running is None:
            self.write(
                _STATUS_LINES[status] + b"content-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%b" % (len(reason), reason)
            )
        self.close()

    # WebSocket hand-over ---------------------------------------------------------------------

    def raw_request_head(self) -> bytes:
        """The upgrade request as it came, for the WebSocket protocol that takes over."""
        method = self._parser.get_method()
        lines = [method, b" ", self._url, b" HTTP/1.1\r\n"]
        for name, value in self._headers:
            lines += (name, b": ", value, b"\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)


def _is_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    connection: list[bytes] = []
    upgrade = b""
    for name, value in headers:
        if name == b"connection":
            connection = [token.strip().lower() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.strip().lower()
    return b"upgrade" in connection and upgrade == b"websocket"
