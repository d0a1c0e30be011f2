"""The ceiling for the benchmarks: a raw ASGI app returning the hello app's exact bytes.

``/stream`` answers the streaming apps' 32 chunks instead (``bench.apps.stream_body``).

No framework, no routing, no per-request work: whatever swell adds on top of HAProxy plus
uvicorn shows up as the gap between this app's numbers and swell's. It also answers HAProxy's
health check (``GET /-/swell/ready``) with 200, as a swell replica does.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HELLO_BODY = b'{"message":"Hello, Ada"}'
READY_PATH = "/-/swell/ready"
STREAM_PATH = "/stream"
STREAM_CHUNKS = 32


def _start(content_type: bytes, body: bytes) -> Message:
    return {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
        ],
    }


_HELLO_START = _start(b"application/json", HELLO_BODY)
_READY_START = _start(b"text/plain", b"ok")
_STREAM_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain; charset=utf-8")],
}


async def app(scope: Message, receive: Receive, send: Send) -> None:
    """Answer every HTTP request with the hello bytes (the ready path with ``ok``)."""
    if scope["type"] == "lifespan":
        # Answer the lifespan protocol so uvicorn does not log that it is unsupported.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == READY_PATH:
        await send(_READY_START)
        await send({"type": "http.response.body", "body": b"ok"})
        return
    if scope["path"] == STREAM_PATH:
        # The streaming ceiling: 32 chunks, each its own send, as a token stream has them.
        await send(_STREAM_START)
        for i in range(STREAM_CHUNKS):
            await send(
                {"type": "http.response.body", "body": f"tok{i} ".encode(), "more_body": True}
            )
        await send({"type": "http.response.body", "body": b""})
        return
    await send(_HELLO_START)
    await send({"type": "http.response.body", "body": HELLO_BODY})
