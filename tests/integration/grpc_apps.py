"""Deployments answering the test service of test_grpc_ingress.py (compiled at test time).

The generated ``swell_grpc_test_pb2`` module is imported inside the methods: it exists only
once the test has compiled the .proto into a directory on sys.path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import swell


def _reply(text: str) -> Any:
    import swell_grpc_test_pb2 as pb2  # type: ignore[import-not-found]

    return pb2.Reply(text=text, replica=swell.get_replica_context().replica_id)


@swell.deployment(max_ongoing_requests=4)
class Greeter:
    def __init__(self, greeting: str = "hello") -> None:
        self._greeting = greeting
        self._started = 0
        self._cancelled = 0

    async def Greet(self, ask: Any) -> Any:
        return _reply(f"{self._greeting} {ask.name}")

    async def Count(self, ask: Any) -> AsyncIterator[Any]:
        for number in range(ask.count):
            if number and ask.delay_s:
                await asyncio.sleep(ask.delay_s)
            yield _reply(f"{self._greeting} {number}")

    async def Fail(self, ask: Any) -> Any:
        raise ValueError(f"cannot greet {ask.name}")

    async def Slow(self, ask: Any) -> Any:
        self._started += 1
        try:
            await asyncio.sleep(ask.delay_s)
        except asyncio.CancelledError:
            self._cancelled += 1
            raise
        return _reply("slept")

    def Cancelled(self, ask: Any) -> Any:  # sync: runs in a thread
        return _reply(f"started {self._started} cancelled {self._cancelled}")

    async def WithContext(self, ask: Any, grpc_context: Any) -> Any:
        grpc_context.set_trailing_metadata((("greeted", ask.name),))
        return _reply("with context")


greeter_app = Greeter.bind()
