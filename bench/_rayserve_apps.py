"""The hello and compose apps written for Ray Serve itself (``from ray import serve``), for
bench_ray.py's Ray Serve rows: the same shapes and answers as examples/hello.py and
bench/apps.py, so every target answers the same bytes."""

from __future__ import annotations

from typing import Any

from ray import serve
from starlette.requests import Request


@serve.deployment(max_ongoing_requests=100)
class Hello:
    def __init__(self, greeting: str) -> None:
        self.greeting = greeting

    async def __call__(self, request: Request) -> dict[str, str]:
        return {"message": f"{self.greeting}, {request.query_params.get('name', 'world')}"}


@serve.deployment(max_ongoing_requests=100)
class Model:
    async def predict(self, name: str) -> str:
        return f"Hello, {name}"


@serve.deployment(max_ongoing_requests=200)
class Ingress:
    """One handle call per HTTP request."""

    def __init__(self, model: Any) -> None:
        self.model = model

    async def __call__(self, request: Request) -> dict[str, str]:
        name = request.query_params.get("name", "world")
        return {"message": await self.model.predict.remote(name)}
