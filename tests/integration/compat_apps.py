"""Ray Serve code as Ray's users write it, served by swell in the Ray-compatibility tests."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pydantic
from starlette.requests import Request

import swell as serve
from swell.handle import DeploymentHandle

# A wait no test reaches: a batch that runs at all ran because it was full.
NEVER = 3600.0


@serve.deployment(max_ongoing_requests=16)
class Batched:
    """Batches HTTP requests and handle calls; each answer says how big its batch was."""

    @serve.batch(max_batch_size=4, batch_wait_timeout_s=NEVER)
    async def __call__(self, requests: list[Request]) -> list[dict[str, Any]]:
        bodies = [await request.json() for request in requests]
        return [{"x": body["x"], "batch_size": len(bodies)} for body in bodies]

    @serve.batch(max_batch_size=3, batch_wait_timeout_s=NEVER)
    async def triple(self, values: list[int]) -> list[int]:
        if any(value < 0 for value in values):
            raise ValueError(f"negative input in {values}")
        return [3 * value for value in values]

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    async def count(self, limits: list[int]) -> AsyncIterator[list[Any]]:
        for step in range(max(limits)):
            yield [step if step < limit else StopIteration for limit in limits]


batched_app = Batched.bind()


@serve.deployment
def no_request() -> dict[str, bool]:
    """A handler without parameters: Ray calls it without the request."""
    return {"called": True}


class Reading(pydantic.BaseModel):
    sensor: str
    value: float


@dataclasses.dataclass
class Pair:
    left: int
    right: int


@serve.deployment
class Shapes:
    """Returns what Ray Serve encodes as JSON and swell used to answer 500 for."""

    def __call__(self, request: Request) -> Any:
        kind = request.query_params["kind"]
        if kind == "query":
            return request.query_params
        if kind == "model":
            return Reading(sensor="t1", value=21.5)
        return Pair(1, 2)


shapes_app = Shapes.bind()
no_request_app = no_request.bind()


@serve.deployment
class Adder:
    def __init__(self, amount: int) -> None:
        self.amount = amount

    def add(self, value: int) -> int:
        return value + self.amount

    def total(self, values: list[int]) -> int:
        return sum(values)


@serve.deployment
class Summer:
    """Two binds of Adder (renamed Adder, Adder_1); responses passed inside a list."""

    def __init__(self, small: DeploymentHandle, large: DeploymentHandle) -> None:
        self.small = small
        self.large = large

    async def __call__(self, request: Request) -> dict[str, int]:
        value = int(request.query_params["x"])
        small, large = self.small.add.remote(value), self.large.add.remote(value)
        total = await self.small.total.remote([small, large])
        return {"small": await small, "large": await large, "total": total}


summer_app = Summer.bind(Adder.bind(1), Adder.bind(10))


@serve.deployment(num_replicas=2)
class Ranked:
    """Ray's replica-rank example: a parameterless handler reading the replica context."""

    def __init__(self) -> None:
        self.rank_at_start = serve.get_replica_context().rank.rank  # in the constructor too

    def __call__(self) -> dict[str, Any]:
        context = serve.get_replica_context()
        return {
            "rank": context.rank.rank,
            "rank_at_start": self.rank_at_start,
            "world_size": context.world_size,
            "unique_id": context.replica_id.unique_id,  # type: ignore[attr-defined]
            "replica_id": context.replica_id,
        }


ranked_app = Ranked.bind()


def build_fastapi_app() -> Any:
    """An ingress factory: Ray calls it in each replica to build the app."""
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/built")
    def built() -> dict[str, str]:
        return {"built": "in the replica"}

    return app


@serve.deployment
@serve.ingress(build_fastapi_app)
class FactoryIngress:
    pass


factory_app = FactoryIngress.bind()
