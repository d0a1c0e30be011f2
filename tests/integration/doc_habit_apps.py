"""Habits of Ray Serve's documentation examples that swell once got wrong.

The deployments are made inside ``build_apps`` so that, like code in a script's ``__main__``,
they reach the replicas pickled by value rather than imported by name.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import StreamingResponse

import swell as serve
from swell.deployment import Application


def build_app() -> FastAPI:
    app = FastAPI()

    @app.get("/")
    def root() -> dict[str, str]:
        return {"served_by": "a class ingress() made"}

    return app


def build_apps() -> dict[str, Application]:
    """Each app by the route prefix the test serves it at."""

    @serve.deployment(max_ongoing_requests=8)
    class CountingStreams:
        """One batched generator serves several HTTP streams, each ending on its own."""

        @serve.batch(max_batch_size=3, batch_wait_timeout_s=0.05)
        async def numbers(self, limits: list[int]) -> AsyncIterator[list[Any]]:
            for step in range(max(limits)):
                yield [str(step) if step < limit else StopIteration for limit in limits]

        async def __call__(self, request: Request) -> StreamingResponse:
            limit = int(request.query_params["limit"])
            return StreamingResponse(self.numbers(limit), media_type="text/plain")

    @serve.deployment
    class LoopInConstructor:
        """A sync constructor that uses the running loop, as Ray's (run on the loop) may."""

        def __init__(self) -> None:
            loop = asyncio.get_running_loop()
            loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(2))
            self.started = asyncio.Event()
            self.task = asyncio.create_task(self._start())

        async def _start(self) -> None:
            self.started.set()

        async def __call__(self) -> dict[str, Any]:
            await asyncio.wait_for(self.started.wait(), timeout=10)
            return {"task_ran": True, "thread": await asyncio.to_thread(lambda: "ok")}

    @serve.deployment
    def nothing() -> None:
        """Returns None: Ray answers an empty body."""

    return {
        "/streams": CountingStreams.bind(),
        "/loop": LoopInConstructor.bind(),
        "/nothing": nothing.bind(),
        # Ray's form for an app without a class of its own: ingress(factory)() makes one.
        "/bare": serve.deployment(serve.ingress(build_app)()).bind(),
    }
