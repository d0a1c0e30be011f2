"""The application the chaos suite serves: unary, streamed and composed requests.

``version`` is a constructor argument, so deploying another version rolls every deployment.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

import swell

# Long enough for a 60 s stream to finish on a draining replica during a rolling update.
DRAIN_S = 90.0


@swell.deployment(
    num_replicas=2,
    max_ongoing_requests=32,
    graceful_shutdown_timeout_s=DRAIN_S,
    graceful_shutdown_wait_loop_s=0.2,
    health_check_period_s=1.0,
    # Three failed checks replace a replica: a 20 s SIGSTOP must not (it comes back).
    health_check_timeout_s=10.0,
)
class ChaosModel:
    def __init__(self, version: str) -> None:
        self.version = version

    async def predict(self, x: int) -> dict[str, Any]:
        return {"y": x + 1, "version": self.version}

    async def tokens(self, n: int, gap_s: float) -> AsyncIterator[str]:
        for index in range(n):
            yield f"{index}\n"
            await asyncio.sleep(gap_s)


@swell.deployment(
    num_replicas=2,
    max_ongoing_requests=64,
    graceful_shutdown_timeout_s=DRAIN_S,
    graceful_shutdown_wait_loop_s=0.2,
    health_check_period_s=1.0,
    health_check_timeout_s=10.0,
)
class ChaosIngress:
    def __init__(self, model: Any, version: str) -> None:
        self.model = model
        self.version = version

    async def __call__(self, request: Request) -> Any:
        path = request.url.path
        query = request.query_params
        if path == "/unary":
            replica = swell.get_replica_context().replica_id
            return {"ok": True, "version": self.version, "replica": replica}
        if path == "/post":
            return {"received": len(await request.body())}
        if path == "/compose":
            return await self.model.predict.remote(int(query.get("x", "1")))
        if path == "/stream":
            return StreamingResponse(
                self._local_chunks(int(query.get("n", "10")), float(query.get("gap", "0.05")))
            )
        if path == "/compose_stream":
            stream = self.model.options(stream=True).tokens.remote(
                int(query.get("n", "10")), float(query.get("gap", "0.05"))
            )
            return StreamingResponse(_relay(stream))
        return Response("no such path", 404)

    async def _local_chunks(self, n: int, gap_s: float) -> AsyncIterator[bytes]:
        for index in range(n):
            yield f"{index}\n".encode()
            await asyncio.sleep(gap_s)


async def _relay(stream: Any) -> AsyncIterator[bytes]:
    async for item in stream:
        yield str(item).encode()


def build(args: dict[str, str]) -> swell.Application:
    version = args.get("version", "v1")
    return ChaosIngress.bind(ChaosModel.bind(version), version)


@swell.deployment(num_replicas=1, health_check_period_s=1.0)
class DiesWhileStarting:
    """A constructor that kills its own process, every time."""

    def __init__(self) -> None:
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)

    async def __call__(self, request: Request) -> str:
        return "never"


dies_while_starting = DiesWhileStarting.bind()
