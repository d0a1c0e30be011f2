"""The controller's admin REST API, with Ray Serve's paths and shapes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


def build_admin_app(status: Callable[[], dict[str, Any]]) -> Starlette:
    """GET /api/serve/applications/ answers what ``swell status`` prints."""

    async def applications(request: Request) -> JSONResponse:
        return JSONResponse(status())

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/api/serve/applications/", applications, methods=["GET"]),
            Route("/-/healthz", healthz, methods=["GET"]),
        ]
    )
