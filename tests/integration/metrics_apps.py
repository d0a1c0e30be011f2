"""An application for the metrics tests: an ingress that calls a model through a handle,
answers 200, 404 or 500 by path, and records user metrics in both deployments."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

import swell
from swell import metrics
from swell.handle import DeploymentHandle


@swell.deployment(num_replicas=1)
class Model:
    def __init__(self) -> None:
        self.sizes = metrics.Histogram(
            "model_input_size", "Inputs seen by the model.", boundaries=[1, 10, 100]
        )
        self.seen = metrics.Counter("model_calls", "Calls the model served.", tag_keys=("kind",))
        self.seen.set_default_tags({"kind": "predict"})

    @swell.batch(max_batch_size=4, batch_wait_timeout_s=0.001)
    async def predict(self, xs: list[int]) -> list[int]:
        for x in xs:
            self.sizes.observe(x)
            self.seen.inc()
        return [x * 2 for x in xs]


@swell.deployment(num_replicas=1)
class Front:
    def __init__(self, model: DeploymentHandle) -> None:
        self.model = model
        self.requests = metrics.Counter(
            "front_requests", "Requests by outcome.", tag_keys=("kind",)
        )
        self.last = metrics.Gauge("front_last_value", "The last value the model answered.")

    async def __call__(self, request: Request) -> Any:
        kind = request.url.path.rsplit("/", 1)[-1]
        self.requests.inc(tags={"kind": kind})
        if kind == "missing":
            return PlainTextResponse("nothing here", status_code=404)
        if kind == "boom":
            raise RuntimeError("boom, as the test asked")
        value = await self.model.predict.remote(3)
        self.last.set(value)
        return Response(str(value))


app = Front.bind(Model.bind())
