"""The controller's admin REST API, with Ray Serve's paths and shapes.

- ``GET /api/serve/applications/``: status and config of every app (what ``swell status``
  prints).
- ``PUT /api/serve/applications/``: the whole config, declaratively: apps it lacks are removed.
- ``DELETE /api/serve/applications/``: remove every app.
- ``POST /api/swell/shutdown``: stop this swell instance.
- ``GET /api/swell/replica-sets/{app}/{deployment}?known_version=N``: the routers' watch; it
  answers as soon as the set differs from version N (or after ``wait_s``, at most 60).

With a token configured, every request must carry ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from swell._protocol import CLUSTER_TOKEN_HEADER, DEMAND_PREFIX, REPLICA_SETS_PREFIX
from swell.exceptions import ConfigError


class AdminBackend(Protocol):
    def status_document(self) -> dict[str, Any]: ...

    async def apply_config(self, document: Any) -> None: ...

    async def delete_all(self) -> None: ...

    def request_stop(self) -> None: ...

    async def watch_replica_set(
        self, app_name: str, deployment: str, known_version: int, wait_s: float
    ) -> dict[str, Any] | None: ...

    def note_demand(self, app_name: str, deployment: str) -> bool: ...


class _RequireToken:
    """Rejects requests without the admin token (used when bound beyond loopback)."""

    def __init__(self, app: ASGIApp, token: str, cluster_token: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()
        self._cluster_token = cluster_token.encode()

    def _allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers", []))
        if hmac.compare_digest(headers.get(b"authorization", b""), self._expected):
            return True
        # Routers in replicas prove membership with the cluster token for their watch.
        return scope["path"].startswith(ROUTER_PREFIXES) and hmac.compare_digest(
            headers.get(CLUSTER_TOKEN_HEADER.encode(), b""), self._cluster_token
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._allowed(scope):
            response = JSONResponse(
                {"error": "this admin API requires 'Authorization: Bearer <token>'"}, 401
            )
            await response(scope, receive, send)
            return
        await self._app(scope, receive, send)


ROUTER_PREFIXES = (REPLICA_SETS_PREFIX, DEMAND_PREFIX)


def build_admin_app(
    backend: AdminBackend, token: str | None = None, cluster_token: str = ""
) -> ASGIApp:
    async def applications(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(backend.status_document())
        if request.method == "DELETE":
            await backend.delete_all()
            return JSONResponse({"deleted": True})
        try:
            document = await request.json()
        except ValueError as error:
            return JSONResponse({"error": f"the request body is not JSON: {error}"}, 400)
        try:
            await backend.apply_config(document)
        except ConfigError as error:
            return JSONResponse({"error": str(error)}, 400)
        return JSONResponse({"accepted": True})

    async def shutdown(request: Request) -> JSONResponse:
        backend.request_stop()
        return JSONResponse({"stopping": True})

    async def replica_set(request: Request) -> JSONResponse:
        try:
            known = int(request.query_params.get("known_version", "-1"))
            wait_s = min(float(request.query_params.get("wait_s", "30")), 60.0)
        except ValueError:
            return JSONResponse({"error": "known_version and wait_s must be numbers"}, 400)
        document = await backend.watch_replica_set(
            request.path_params["app"], request.path_params["deployment"], known, wait_s
        )
        if document is None:
            return JSONResponse({"error": "no such application or deployment"}, 404)
        return JSONResponse(document)

    async def demand(request: Request) -> JSONResponse:
        known = backend.note_demand(request.path_params["app"], request.path_params["deployment"])
        return JSONResponse({"noted": known}, 200 if known else 404)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app = Starlette(
        routes=[
            Route("/api/serve/applications/", applications, methods=["GET", "PUT", "DELETE"]),
            Route("/api/swell/shutdown", shutdown, methods=["POST"]),
            Route("/api/swell/replica-sets/{app}/{deployment}", replica_set, methods=["GET"]),
            Route("/api/swell/demand/{app}/{deployment}", demand, methods=["POST"]),
            Route("/-/healthz", healthz, methods=["GET"]),
        ]
    )
    return _RequireToken(app, token, cluster_token) if token else app
