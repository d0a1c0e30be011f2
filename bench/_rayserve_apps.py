"""The benchmark apps written for Ray Serve itself (``from ray import serve``), for the Ray
Serve rows of bench_ray.py and bench_all.py: the same shapes and answers as examples/hello.py
and bench/apps.py, so every target answers the same bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import StreamingResponse


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


@serve.deployment(max_ongoing_requests=100)
class Tokens:
    """Streams 32 chunks straight to the client (bench/apps.py's Tokens)."""

    async def __call__(self, request: Request) -> StreamingResponse:
        chunks = int(request.query_params.get("n", 32))

        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                yield f"tok{i} ".encode()

        return StreamingResponse(body(), media_type="text/plain")


@serve.deployment(max_ongoing_requests=100)
class TokenModel:
    async def tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"tok{i} "


@serve.deployment(max_ongoing_requests=200)
class StreamIngress:
    """Relays the model's ``tokens`` to the client (bench/apps.py's StreamIngress)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    async def __call__(self, request: Request) -> StreamingResponse:
        chunks = int(request.query_params.get("n", 32))
        stream = self.model.options(stream=True).tokens.remote(chunks)

        async def body() -> AsyncIterator[bytes]:
            async for token in stream:
                yield token.encode()

        return StreamingResponse(body(), media_type="text/plain")
