"""Multiplexed deployments for the integration tests (importable, so replicas load them)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request

import swell


class Model:
    """A loaded model; its ``__del__`` records the unload (once: Python may call it again)."""

    def __init__(self, model_id: str, owner: ModelsBase) -> None:
        self.model_id = model_id
        self.owner = owner

    def __del__(self) -> None:
        if self.owner.held.get(self.model_id) is self:
            del self.owner.held[self.model_id]
            self.owner.unloaded.append(self.model_id)


class ModelsBase:
    """Answers which replica served a request and whether it held the model already."""

    def __init__(self) -> None:
        self.held: dict[str, Model] = {}
        self.unloaded: list[str] = []

    async def load(self, model_id: str) -> Model:
        await asyncio.sleep(0.05)  # loading takes a while, so concurrent requests overlap
        model = Model(model_id, self)
        self.held[model_id] = model
        return model

    async def get_model(self, model_id: str) -> Model:
        raise NotImplementedError

    async def __call__(self, request: Request) -> dict[str, Any]:
        return await self.predict()

    async def predict(self) -> dict[str, Any]:
        model_id = swell.get_multiplexed_model_id()
        hit = model_id in self.held
        model = await self.get_model(model_id)
        return {
            "replica": swell.get_replica_context().replica_id,
            "hit": hit,
            "model": model.model_id,
        }

    def model_id_in_a_thread(self) -> str:
        """A sync method (run on a worker thread) sees the request's model id too."""
        return swell.get_multiplexed_model_id()

    def unloaded_models(self) -> list[str]:
        return list(self.unloaded)

    async def model_ids(self, count: int) -> AsyncIterator[str]:
        """A streaming call sees its model id too."""
        for _ in range(count):
            yield swell.get_multiplexed_model_id()


@swell.deployment(num_replicas=3, max_ongoing_requests=100)
class Models(ModelsBase):
    @swell.multiplexed(max_num_models_per_replica=3)
    async def get_model(self, model_id: str) -> Model:
        return await self.load(model_id)


@swell.deployment(num_replicas=1)
class OneModel(ModelsBase):
    @swell.multiplexed(max_num_models_per_replica=1)
    async def get_model(self, model_id: str) -> Model:
        return await self.load(model_id)


@swell.deployment
def model_id_echo(request: Request) -> str:
    """No @multiplexed anywhere: the header's id still reaches the code, as in Ray."""
    return swell.get_multiplexed_model_id()


models_app = Models.bind()
echo_app = model_id_echo.bind()
one_model_app = OneModel.bind()
