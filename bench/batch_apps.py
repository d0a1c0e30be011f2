"""The apps ``bench_batch.py`` compares: one model, called per request or in batches.

The model stands for an accelerator: one call at a time per replica (a lock), each call costing
a fixed ``CALL_S`` (the launch, the transfer) plus ``ITEM_S`` per input. That is the shape that
makes batching worth it; the numbers are small so a run stays short.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request

import swell

CALL_S = 0.004
ITEM_S = 0.0001
MAX_BATCH_SIZE = 32
BATCH_WAIT_TIMEOUT_S = 0.002


class _Device:
    """One call at a time, as one GPU stream would run them."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()

    async def run(self, inputs: list[str]) -> list[str]:
        async with self._lock:
            await asyncio.sleep(CALL_S + ITEM_S * len(inputs))
        return [text.upper() for text in inputs]


@swell.deployment(max_ongoing_requests=200)
class Unbatched:
    def __init__(self) -> None:
        self._device = _Device()

    async def __call__(self, request: Request) -> str:
        (answer,) = await self._device.run([request.query_params.get("text", "x")])
        return answer


@swell.deployment(max_ongoing_requests=200)
class Batched:
    def __init__(self) -> None:
        self._device = _Device()

    @swell.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_TIMEOUT_S)
    async def predict(self, texts: list[str]) -> list[str]:
        return await self._device.run(texts)

    async def __call__(self, request: Request) -> str:
        return await self.predict(request.query_params.get("text", "x"))


unbatched = Unbatched.bind()
batched = Batched.bind()
