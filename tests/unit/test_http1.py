"""The replica's HTTP/1.1 server, over real sockets on 127.0.0.1: framing, keep-alive,
pipelining, request bodies, errors, disconnects, lifespan and the drain."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from swell._replica import http1
from swell._replica.http_server import HTTPServer, LifespanFailed

Message = dict[str, Any]
App = Callable[[Message, Any, Any], Awaitable[None]]
DEADLINE_S = 5.0


def _bound() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serving(
    app: App, *, lifespan: App | None = None, keep_alive_s: float = 20.0
) -> AsyncIterator[tuple[int, HTTPServer]]:
    sock = _bound()
    port = sock.getsockname()[1]
    server = HTTPServer(keep_alive_s=keep_alive_s, lifespan_app=lifespan)
    await server.start([(sock, app, False)])
    stopped = asyncio.ensure_future(server.serve_until_shutdown(DEADLINE_S))
    try:
        yield port, server
    finally:
        server.begin_shutdown()
        await asyncio.wait_for(stopped, DEADLINE_S * 2)


async def _connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), DEADLINE_S)


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """One response: status line, headers, and the body by its framing."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
    lines = head.split(b"\r\n")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(b": ")
            headers[name.lower()] = value
    if b"content-length" in headers:
        body = await asyncio.wait_for(
            reader.readexactly(int(headers[b"content-length"])), DEADLINE_S
        )
    elif headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), DEADLINE_S))[:-2], 16)
            chunk = await asyncio.wait_for(reader.readexactly(size + 2), DEADLINE_S)
            if size == 0:
                break
            body += chunk[:-2]
    else:
        body = await asyncio.wait_for(reader.read(), DEADLINE_S)
    return lines[0], headers, body


def run(main: Callable[[], Awaitable[None]]) -> None:
    uvloop.run(asyncio.wait_for(main(), 30))


async def hello(scope: Message, receive: Any, send: Any) -> None:
    body = f"{scope['method']} {scope['path']}?{scope['query_string'].decode()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def test_a_whole_body_gets_a_content_length_in_one_write_and_keep_alive_serves_the_next() -> None:
    writes: list[bytes] = []

    async def main() -> None:
        async with serving(hello) as (port, server):
            reader, writer = await _connect(port)
            for i, path in enumerate((b"/a?x=1", b"/b%20c")):
                writer.write(b"GET " + path + b" HTTP/1.1\r\nhost: x\r\n\r\n")
                status, headers, body = await _response(reader)
                assert status == b"HTTP/1.1 200 OK"
                assert b"transfer-encoding" not in headers
                assert int(headers[b"content-length"]) == len(body)
                if i == 0:  # count the second response's writes
                    conn = next(iter(server._state.connections))  # type: ignore[union-attr]
                    conn.transport = _CountingTransport(conn.transport, writes)  # type: ignore[assignment]
            assert body == b"GET /b c?"
            writer.close()

    run(main)
    assert len(writes) == 1, writes  # status line, headers and body together


def test_pipelined_requests_are_answered_in_order() -> None:
    async def slow_first(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/1":
            await asyncio.sleep(0.05)  # the second request is parsed while this one runs
        await hello(scope, receive, send)

    async def main() -> None:
        async with serving(slow_first) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"".join(b"GET /%d HTTP/1.1\r\nhost: x\r\n\r\n" % i for i in (1, 2, 3)))
            bodies = [(await _response(reader))[2] for _ in range(3)]
            assert bodies == [b"GET /1?", b"GET /2?", b"GET /3?"]
            writer.close()

    run(main)


def test_a_streamed_body_is_chunked_and_chunks_sent_without_pausing_share_one_write() -> None:
    writes: list[bytes] = []

    async def main() -> None:
        go = asyncio.Event()
        started: asyncio.Queue[None] = asyncio.Queue()

        async def tokens(scope: Message, receive: Any, send: Any) -> None:
            await started.put(None)
            await go.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            for i in range(32):
                await send({"type": "http.response.body", "body": b"t%d " % i, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

        async with serving(tokens) as (port, server):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await asyncio.wait_for(started.get(), DEADLINE_S)
            conn = next(iter(server._state.connections))  # type: ignore[union-attr]
            conn.transport = _CountingTransport(conn.transport, writes)  # type: ignore[assignment]
            go.set()
            _, headers, body = await _response(reader)
            assert headers[b"transfer-encoding"] == b"chunked"
            assert body == b"".join(b"t%d " % i for i in range(32))
            writer.close()

    run(main)
    # The head and all 32 chunks leave corked in one write, with the stream's end.
    assert len(writes) == 1, writes
    assert writes[0].endswith(b"0\r\n\r\n")


class _CountingTransport:
    """The connection's transport, with every write recorded (uvloop's are read-only)."""

    def __init__(self, transport: Any, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(data)
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def test_http_1_0_streams_end_with_the_connection_and_head_gets_no_body() -> None:
    async def streamed(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        await send({"type": "http.response.body", "body": b"b"})

    async def main() -> None:
        async with serving(streamed) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.0\r\n\r\n")
            status, headers, body = await _response(reader)
            assert (status, body) == (b"HTTP/1.1 200 OK", b"ab")
            assert b"transfer-encoding" not in headers
            reader, writer = await _connect(port)
            writer.write(b"HEAD / HTTP/1.1\r\nhost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
            assert b"transfer-encoding" not in head.lower()
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")  # nothing left over from HEAD
            status, _, body = await _response(reader)
            assert (status, body) == (b"HTTP/1.1 200 OK", b"ab")
            writer.close()

    run(main)


def test_request_bodies_arrive_chunked_or_whole_and_expect_continue_is_answered() -> None:
    async def echo(scope: Message, receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def main() -> None:
        async with serving(echo) as (port, _):
            reader, writer = await _connect(port)
            writer.write(
                b"POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
            )
            assert (await _response(reader))[2] == b"abcde"
            big = b"x" * 300_000  # past the read-ahead: reading pauses and resumes
            writer.write(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(big))
            writer.write(big)
            assert (await _response(reader))[2] == big
            writer.write(
                b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
            )
            interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
            writer.write(b"ok")
            assert (await _response(reader))[2] == b"ok"
            writer.close()

    run(main)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 400 Bad Request"),
        (
            b"GET / HTTP/1.1\r\nhost: x\r\nbig: "
            + b"y" * (http1._MAX_HEAD_BYTES + 1)
            + b"\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ],
)
def test_bad_requests_get_a_4xx_and_the_server_keeps_serving(
    request_bytes: bytes, status: bytes
) -> None:
    async def main() -> None:
        async with serving(hello) as (port, _):
            reader, writer = await _connect(port)
            writer.write(request_bytes)
            assert (await _response(reader))[0] == status
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await _response(reader))[0] == b"HTTP/1.1 200 OK"
            writer.close()

    run(main)


@pytest.mark.parametrize("upgrade", [b"websocket", b"h2c"])
def test_an_upgrade_the_server_does_not_speak_is_served_as_http_then_closed(upgrade: bytes) -> None:
    async def main() -> None:
        async with serving(hello) as (port, _):  # no WebSocket app on this server
            reader, writer = await _connect(port)
            writer.write(
                b"GET / HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: %b\r\n\r\n" % upgrade
            )
            status, headers, body = await _response(reader)
            assert (status, headers[b"connection"], body) == (
                b"HTTP/1.1 200 OK",
                b"close",
                b"GET /?",
            )
            assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""

    run(main)


@pytest.mark.parametrize(
    "fault",
    [
        "raises",
        "returns early",
        "bad header",
        "body before start",
        "raises after start",
        "raises mid-stream",
    ],
)
def test_an_app_fault_gets_a_500_or_an_ended_connection_never_a_hang(fault: str) -> None:
    async def faulty(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/ok":
            return await hello(scope, receive, send)
        if fault == "raises":
            raise ValueError("boom")
        if fault == "bad header":
            headers = [(b"x-injected", b"a\r\nset-cookie: evil")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
        if fault == "body before start":
            await send({"type": "http.response.body", "body": b"x"})
        if fault == "raises after start":  # nothing has left yet: a clean 500 still can
            await send({"type": "http.response.start", "status": 200, "headers": []})
            raise ValueError("boom")
        if fault == "raises mid-stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
            raise ValueError("boom")
        return None

    async def main() -> None:
        async with serving(faulty) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            if fault == "raises mid-stream":
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), DEADLINE_S)
                assert head.startswith(b"HTTP/1.1 200 OK")
                rest = await asyncio.wait_for(reader.read(), DEADLINE_S)  # ends: no final chunk
                assert not rest.endswith(b"0\r\n\r\n")
            else:
                status, headers, _ = await _response(reader)
                assert status == b"HTTP/1.1 500 Internal Server Error"
                assert b"set-cookie" not in headers
            reader, writer = await _connect(port)
            writer.write(b"GET /ok HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await _response(reader))[0] == b"HTTP/1.1 200 OK"
            writer.close()

    run(main)


def test_a_client_that_leaves_is_seen_by_receive_and_send_raises_oserror() -> None:
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def waits(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        assert (await receive())["type"] == "http.request"
        message = await receive()  # the body is in: this waits for the disconnect
        await seen.put(message["type"])
        try:
            await send({"type": "http.response.body", "body": b"more", "more_body": True})
        except OSError:
            await seen.put("OSError")

    async def main() -> None:
        async with serving(waits) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"first\r\n"), DEADLINE_S)
            writer.close()
            assert await asyncio.wait_for(seen.get(), DEADLINE_S) == "http.disconnect"
            assert await asyncio.wait_for(seen.get(), DEADLINE_S) == "OSError"

    run(main)


def test_idle_connections_close_after_the_keep_alive_timeout() -> None:
    async def main() -> None:
        async with serving(hello, keep_alive_s=0.1) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            await _response(reader)
            # The sweep runs each second: the idle connection ends within a few.
            assert await asyncio.wait_for(reader.read(), DEADLINE_S) == b""

    run(main)


def test_shutdown_lets_the_request_in_hand_finish_and_closes_idle_connections() -> None:
    release = asyncio.Event()

    async def slow(scope: Message, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await release.wait()
        await hello(scope, receive, send)

    async def main() -> None:
        sock = _bound()
        port = sock.getsockname()[1]
        server = HTTPServer(keep_alive_s=20)
        await server.start([(sock, slow, False)])
        stopped = asyncio.ensure_future(server.serve_until_shutdown(DEADLINE_S))
        idle_reader, idle_writer = await _connect(port)
        idle_writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        await _response(idle_reader)
        busy_reader, busy_writer = await _connect(port)
        busy_writer.write(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.sleep(0.05)
        server.begin_shutdown()
        assert await asyncio.wait_for(idle_reader.read(), DEADLINE_S) == b""
        assert not stopped.done()
        release.set()
        status, headers, _ = await _response(busy_reader)
        assert (status, headers[b"connection"]) == (b"HTTP/1.1 200 OK", b"close")
        await asyncio.wait_for(stopped, DEADLINE_S)
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(main)


def test_lifespan_state_reaches_requests_and_a_failed_startup_says_why() -> None:
    events: list[str] = []

    def lifespan_app(fail: bool) -> App:
        async def app(scope: Message, receive: Any, send: Any) -> None:
            assert scope["type"] == "lifespan"
            assert (await receive())["type"] == "lifespan.startup"
            if fail:
                await send({"type": "lifespan.startup.failed", "message": "no model file"})
                return
            scope["state"]["model"] = "loaded"
            await send({"type": "lifespan.startup.complete"})
            assert (await receive())["type"] == "lifespan.shutdown"
            events.append("shutdown")
            await send({"type": "lifespan.shutdown.complete"})

        return app

    async def uses_state(scope: Message, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["state"]["model"].encode()})

    async def main() -> None:
        async with serving(uses_state, lifespan=lifespan_app(False)) as (port, _):
            reader, writer = await _connect(port)
            writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await _response(reader))[2] == b"loaded"
            writer.close()
        assert events == ["shutdown"]
        server = HTTPServer(keep_alive_s=20, lifespan_app=lifespan_app(True))
        with pytest.raises(LifespanFailed, match="no model file"):
            await server.start([(_bound(), uses_state, False)])

    run(main)
