"""A FastAPI ingress with WebSocket routes, for the integration tests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

import swell

app = FastAPI()


@swell.deployment(num_replicas=1)
@swell.ingress(app)
class Sockets:
    """Echoes text and bytes, closes with a chosen code, and notes how a session ended."""

    def __init__(self) -> None:
        self.prefix = "echo: "

    @app.websocket("/echo")
    async def echo(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("text") is not None:
                    text = message["text"]
                    if text.startswith("close "):
                        code = int(text.split()[1])
                        await websocket.close(code=code, reason="asked to")
                        return
                    await websocket.send_text(self.prefix + text)
                else:
                    await websocket.send_bytes(bytes(reversed(message["bytes"])))
        except WebSocketDisconnect:
            return

    @app.websocket("/wait")
    async def wait(self, websocket: WebSocket, marker: str) -> None:
        """Sends one message, then waits for the client's; notes WebSocketDisconnect."""
        await websocket.accept()
        await websocket.send_text("ready")
        try:
            await websocket.receive_text()
        except WebSocketDisconnect as disconnect:
            Path(marker + ".disconnect").write_text(str(disconnect.code))

    @app.websocket("/busy")
    async def busy(self, websocket: WebSocket, marker: str) -> None:
        """Works without reading: a client that leaves must cancel it."""
        await websocket.accept()
        await websocket.send_text("working")
        try:
            await asyncio.sleep(600)
        except asyncio.CancelledError:
            Path(marker + ".cancelled").touch()
            raise

    @app.get("/plain")
    def plain(self) -> str:
        return "still HTTP"


sockets_app = Sockets.bind()
