"""Applications for the Ray engine's tests: each answer says which replica served it."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

import swell as serve


def _me() -> str:
    return serve.get_replica_context().replica_id


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Where:
    """Answers with its replica id."""

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"replica": _me()}


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Back:
    def who(self) -> str:
        return _me()


@serve.deployment(ray_actor_options={"num_cpus": 0.1})
class Front:
    """Calls Back through a handle: the call goes straight to Back's replica."""

    def __init__(self, back: Any) -> None:
        self.back = back

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"front": _me(), "back": await self.back.who.remote()}


where_app = Where.bind()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, graceful_shutdown_timeout_s=15)
class Slow:
    async def wait(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return _me()


@serve.deployment(ray_actor_options={"num_cpus": 0.1}, graceful_shutdown_timeout_s=5)
class Versioned:
    """Answers with its replica id and the version it was bound with (a new one rolls)."""

    def __init__(self, version: str) -> None:
        self.version = version

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {"replica": _me(), "version": self.version}
