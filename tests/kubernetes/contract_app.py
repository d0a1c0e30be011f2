"""The application the fake operator deploys: a greeting set by ``user_config`` (changed in
place) and a version set by ``args`` (a new code version: replicas are replaced)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from starlette.requests import Request

import swell


@swell.deployment(num_replicas=2, max_ongoing_requests=100, graceful_shutdown_timeout_s=30)
class Greeter:
    def __init__(self, version: str) -> None:
        self.version = version
        self.greeting = "hello"

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.greeting = str(config.get("greeting", "hello"))

    async def __call__(self, request: Request) -> dict[str, Any]:
        # ?hold_s=N keeps the request in flight (a replica then drains for that long); ?mark=
        # names a file touched once the request has arrived.
        if "mark" in request.query_params:
            Path(request.query_params["mark"]).touch()
        await asyncio.sleep(min(float(request.query_params.get("hold_s", "0")), 10.0))
        return {"greeting": self.greeting, "version": self.version, "pid": os.getpid()}


def build(args: dict[str, str]) -> swell.Application:
    return Greeter.bind(args.get("version", "v1"))
