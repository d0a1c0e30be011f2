"""Deployments for the logging and request-id tests (importable by replica processes)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request

import swell
from swell.context import _get_serve_request_context

logger = logging.getLogger("logging_apps")


@swell.deployment
class Model:
    def request_id(self, marker: str) -> dict[str, Any]:
        context = _get_serve_request_context()
        logger.info("model info %s", marker)
        logger.warning("model warning %s", marker)
        print(f"model print {marker}")
        return {"request_id": swell.get_request_id(), "route": context.route}

    async def request_id_async(self, marker: str) -> str:
        logger.info("model async info %s", marker)
        return swell.get_request_id()


@swell.deployment
class Ingress:
    def __init__(self, model: Any) -> None:
        self.model = model

    async def __call__(self, request: Request) -> dict[str, Any]:
        marker = request.query_params.get("marker", "")
        if marker == "fail":
            raise ValueError("the ingress failed on purpose")
        logger.info("ingress info %s", marker)
        logger.warning("ingress warning %s", marker)
        context = _get_serve_request_context()
        downstream = await self.model.request_id.remote(marker)
        return {
            "ingress": swell.get_request_id(),
            "ingress_context": [context.request_id, context.app_name, context.route],
            "model": downstream["request_id"],
            "model_async": await self.model.request_id_async.remote(marker),
            "model_route": downstream["route"],
        }


app = Ingress.bind(Model.bind())
