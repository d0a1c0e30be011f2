"""A WebSocket session in a replica: how a client that leaves reaches the handler."""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from swell._replica.websocket import serve_websocket

_CONNECT: Message = {"type": "websocket.connect"}
_DISCONNECT: Message = {"type": "websocket.disconnect", "code": 1001}


class _Client:
    """The server side of one connection: messages to hand out, and what the app sent."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[Message] = asyncio.Queue()
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return await self.incoming.get()

    async def send(self, message: Message) -> None:
        self.sent.append(message)


def _run(app: object, client: _Client, *messages: Message) -> None:
    async def scenario() -> None:
        for message in messages:
            client.incoming.put_nowait(message)
        await asyncio.wait_for(
            serve_websocket(app, {"type": "websocket"}, client.receive, client.send), 5
        )  # type: ignore[arg-type]

    asyncio.run(scenario())


def test_a_handler_waiting_for_a_message_gets_the_disconnect() -> None:
    seen: list[Message] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(await receive())
        await send({"type": "websocket.accept"})
        seen.append(await receive())
        seen.append(await receive())

    _run(app, _Client(), _CONNECT, {"type": "websocket.receive", "text": "hi"}, _DISCONNECT)
    assert [m["type"] for m in seen] == [
        "websocket.connect",
        "websocket.receive",
        "websocket.disconnect",
    ]


def test_a_busy_handler_is_cancelled_when_the_client_leaves() -> None:
    cancelled: list[bool] = []
    client = _Client()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    async def scenario() -> None:
        client.incoming.put_nowait(_CONNECT)
        session = asyncio.ensure_future(
            serve_websocket(app, {"type": "websocket"}, client.receive, client.send)
        )
        while not client.sent:
            await asyncio.sleep(0.001)
        client.incoming.put_nowait(_DISCONNECT)
        await asyncio.wait_for(session, 5)  # ends normally: the cancellation was ours

    asyncio.run(scenario())
    assert cancelled == [True]


def test_a_handler_that_closed_is_not_cancelled_by_the_disconnect_after() -> None:
    finished: list[bool] = []
    client = _Client()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        await asyncio.sleep(0.05)  # the client's disconnect arrives meanwhile
        finished.append(True)

    async def scenario() -> None:
        client.incoming.put_nowait(_CONNECT)
        session = asyncio.ensure_future(
            serve_websocket(app, {"type": "websocket"}, client.receive, client.send)
        )
        while len(client.sent) < 2:
            await asyncio.sleep(0.001)
        client.incoming.put_nowait(_DISCONNECT)
        await asyncio.wait_for(session, 5)

    asyncio.run(scenario())
    assert finished == [True]


def test_a_message_then_leaving_cancels_the_handler_busy_with_that_message() -> None:
    """The handler takes the message and gets busy; the disconnect behind it must cancel it."""
    cancelled: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        message = await receive()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.append(message["text"])
            raise

    work: Message = {"type": "websocket.receive", "text": "work"}
    _run(app, _Client(), _CONNECT, work, _DISCONNECT)
    assert cancelled == ["work"]
