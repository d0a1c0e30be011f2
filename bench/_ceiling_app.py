"""The ceiling for bench_hello.py: a raw ASGI app returning the hello app's exact bytes.

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
    await send(_HELLO_START)
    await send({"type": "http.response.body", "body": HELLO_BODY})
