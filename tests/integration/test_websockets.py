"""WebSockets through HAProxy into a FastAPI ingress: upgrade, text and binary both ways,
close codes each way, and a client that leaves ends (or cancels) its handler."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

import swell
from tests.integration import websocket_apps
from tests.integration.conftest import Swell, haproxy_binaries, wait_until


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_websockets_through_haproxy(serve: Swell, tmp_path: Path) -> None:
    swell.run(websocket_apps.sockets_app, name="ws", route_prefix="/ws")
    url = f"ws://127.0.0.1:{serve.port}/ws"

    with connect(url + "/echo", open_timeout=30, max_size=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "echo: hello"
        ws.send(b"\x01\x02\x03")
        assert ws.recv(timeout=30) == b"\x03\x02\x01"
        # Larger than HAProxy's buffers and the replica's body limit has nothing to say.
        big = os.urandom(3 << 20)
        ws.send(big)
        assert ws.recv(timeout=30) == big[::-1]
        ws.send("close 4001")  # the server closes, with its code and reason
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "asked to")

    # The client closes while the handler waits for a message: WebSocketDisconnect, its code.
    marker = tmp_path / "waiting"
    with connect(f"{url}/wait?marker={marker}", open_timeout=30) as ws:
        assert ws.recv(timeout=30) == "ready"
        ws.close(code=4002)
    disconnect = Path(f"{marker}.disconnect")
    wait_until(disconnect.exists, 15, "the handler to see WebSocketDisconnect")
    assert disconnect.read_text() == "4002"

    # The client leaves while the handler is busy (not reading): the handler is cancelled.
    marker = tmp_path / "busy"
    with connect(f"{url}/busy?marker={marker}", open_timeout=30) as ws:
        assert ws.recv(timeout=30) == "working"
    wait_until(Path(f"{marker}.cancelled").exists, 15, "the busy handler to be cancelled")

    # Plain HTTP routes of the same app are untouched.
    assert serve.client.get("/ws/plain").json() == "still HTTP"
