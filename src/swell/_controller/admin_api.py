"""The controller's admin REST API, with Ray Serve's paths and shapes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_admin_app(
    status: Callable[[], dict[str, Any]],
    watch_replica_set: Callable[[str, str, int, float], Awaitable[dict[str, Any] | None]],
) -> Starlette:
    """GET /api/serve/applications/ answers what ``swell status`` prints.

    GET /api/swell/replica-sets/{app}/{deployment}?known_version=N is the routers' watch: it
    answers as soon as the set differs from version N (or after wait_s, at most 60).
    """

    async def replica_set(request: Request) -> JSONResponse:
        try:
            known = int(request.query_params.get("known_version", "-1"))
            wait_s = min(float(request.query_params.get("wait_s", "30")), 60.0)
        except ValueError:
            return JSONResponse({"error": "known_version and wait_s must be numbers"}, 400)
        document = await watch_replica_set(
            request.path_params["app"], request.path_params["deployment"], known, wait_s
        )
        if document is None:
            return JSONResponse({"error": "no such application or deployment"}, 404)
        return JSONResponse(document)

    async def applications(request: Request) -> JSONResponse:
        return JSONResponse(status())

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/api/serve/applications/", applications, methods=["GET"]),
            Route("/-/healthz", healthz, methods=["GET"]),
            Route("/api/swell/replica-sets/{app}/{deployment}", replica_set, methods=["GET"]),
        ]
    )
