"""The multiplexed deployment ``bench_multiplex.py`` measures (replicas import it by reference).

A model "load" is an ``asyncio.sleep`` of ``LOAD_S``: what a miss costs is the point here, not
what a real model costs. Each answer says whether the replica held the model already.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request

import swell

LOAD_S = 0.02
MODELS_PER_REPLICA = 4
# The model id in a header HAProxy does not route on: the same work without affinity.
UNROUTED_HEADER = "x-bench-model"


class _Model:
    def __init__(self, model_id: str, held: set[str]) -> None:
        self.model_id = model_id
        self._held = held

    def __del__(self) -> None:
        self._held.discard(self.model_id)


@swell.deployment(num_replicas=3, max_ongoing_requests=100)
class Models:
    def __init__(self) -> None:
        self.held: set[str] = set()

    @swell.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> _Model:
        await asyncio.sleep(LOAD_S)
        self.held.add(model_id)
        return _Model(model_id, self.held)

    async def _answer(self, model_id: str) -> dict[str, Any]:
        hit = model_id in self.held
        await self.get_model(model_id)
        return {"hit": hit}

    async def __call__(self, request: Request) -> dict[str, Any]:
        model_id = swell.get_multiplexed_model_id() or request.headers.get(UNROUTED_HEADER, "")
        if not model_id:
            return {"hit": True}  # the plain run: no model at all
        return await self._answer(model_id)

    async def predict(self, model_id: str = "") -> dict[str, Any]:
        """A handle call: the model from multiplexed_model_id, else the argument (unrouted)."""
        model_id = swell.get_multiplexed_model_id() or model_id
        if not model_id:
            return {"hit": True}  # the plain run: no model at all
        return await self._answer(model_id)


models_app = Models.bind()
