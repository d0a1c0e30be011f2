"""Apps for bench_compose.py: an ingress calling a model through a handle, and a streaming one.

``compose_app`` answers ``GET /?name=Ada`` with the hello app's exact bytes, but every request
costs one handle call (HAProxy -> ingress replica -> data plane -> model replica). ``stream_app``
answers with ``tokens`` chunks streamed from the model's async generator through the ingress.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import cast

from starlette.requests import Request
from starlette.responses import StreamingResponse

import swell
from swell import Application, Deployment, DeploymentHandle

STREAM_CHUNKS = 32


def stream_body(chunks: int = STREAM_CHUNKS) -> bytes:
    """What one streaming response carries, for the benchmark's correctness check."""
    return b"".join(f"tok{i} ".encode() for i in range(chunks))


@swell.deployment(num_replicas=2, max_ongoing_requests=100)
class Model:
    """The callee; ``predict`` is a coroutine so it runs on the replica's loop."""

    async def predict(self, name: str) -> str:
        return f"Hello, {name}"

    async def tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"tok{i} "


@swell.deployment(num_replicas=2, max_ongoing_requests=100)
class SyncModel:
    """The same callee with a plain ``def``: swell runs it in a worker thread."""

    def predict(self, name: str) -> str:
        return f"Hello, {name}"


@swell.deployment(num_replicas=1, max_ongoing_requests=200)
class Ingress:
    """One handle call per HTTP request."""

    def __init__(self, model: DeploymentHandle) -> None:
        self.model = model

    async def __call__(self, request: Request) -> dict[str, str]:
        name = request.query_params.get("name", "world")
        return {"message": await self.model.predict.remote(name)}


@swell.deployment(num_replicas=2, max_ongoing_requests=100)
class Tokens:
    """Streams chunks straight to the client: the direct stream, no handle call."""

    async def __call__(self, request: Request) -> StreamingResponse:
        chunks = int(request.query_params.get("n", STREAM_CHUNKS))

        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                yield f"tok{i} ".encode()

        return StreamingResponse(body(), media_type="text/plain")


@swell.deployment(num_replicas=1, max_ongoing_requests=200)
class StreamIngress:
    """Streams the model's ``tokens`` to the client as they arrive."""

    def __init__(self, model: DeploymentHandle) -> None:
        self.model = model

    async def __call__(self, request: Request) -> StreamingResponse:
        chunks = int(request.query_params.get("n", STREAM_CHUNKS))
        stream = self.model.options(stream=True).tokens.remote(chunks)

        async def body() -> AsyncIterator[bytes]:
            async for token in stream:
                yield token.encode()

        return StreamingResponse(body(), media_type="text/plain")


def compose_app(
    ingress_replicas: int = 1, model_replicas: int = 2, sync_model: bool = False
) -> Application:
    """Ingress -> Model, with the replica split under test."""
    # cast: mypy does not apply class decorators, so it sees the classes, not Deployments.
    model = cast(Deployment, SyncModel if sync_model else Model)
    ingress = cast(Deployment, Ingress)
    return ingress.options(num_replicas=ingress_replicas).bind(
        model.options(num_replicas=model_replicas).bind()
    )


def stream_app(ingress_replicas: int = 1, model_replicas: int = 1) -> Application:
    """StreamIngress -> Model.tokens."""
    model = cast(Deployment, Model).options(num_replicas=model_replicas)
    ingress = cast(Deployment, StreamIngress)
    return ingress.options(num_replicas=ingress_replicas).bind(model.bind())


def direct_stream_app(replicas: int = 2) -> Application:
    """Tokens streamed by the replica that got the HTTP request."""
    return cast(Deployment, Tokens).options(num_replicas=replicas).bind()


app = compose_app()
stream = stream_app()
