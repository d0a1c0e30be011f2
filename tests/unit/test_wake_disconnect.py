"""The wake server with a client that gave up while its request waited for a replica."""

from __future__ import annotations

import asyncio
from typing import Any

from swell._controller.wake import WakeServer


class _Backend:
    def app_for_path(self, path: str) -> str | None:
        return "app"

    def note_waiting(self, app_name: str, delta: int) -> None:
        pass

    async def wait_for_ingress_replica(self, app_name: str, timeout_s: float) -> str | None:
        return "127.0.0.1:9"  # a replica appeared; the body is read next


def test_a_client_gone_before_its_body_is_read_gets_no_answer_and_no_error() -> None:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def main() -> None:
        server = WakeServer(_Backend(), timeout_s=1.0)
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [],
        }
        try:
            await server(scope, receive, send)
        finally:
            await server.aclose()

    asyncio.run(main())
    assert sent == []
