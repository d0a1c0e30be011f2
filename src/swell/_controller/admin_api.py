"""The controller's admin REST API, with Ray Serve's paths and shapes.

- ``GET /api/serve/applications/``: status and config of every app (what ``swell status``
  prints). ``?api_type=declarative`` (what KubeRay sends) is accepted; swell does not filter
  by it.
- ``PUT /api/serve/applications/``: the whole config, declaratively: apps it lacks are removed.
  Answered once the schema is valid (400 otherwise); the deploy continues in the background
  and its progress shows in the GET.
- ``DELETE /api/serve/applications/``: remove every app.
- ``POST /api/swell/shutdown``: stop this swell instance.
- ``GET /api/swell/replica-sets/{app}/{deployment}?known_version=N``: the routers' watch; it
  answers as soon as the set differs from version N (or after ``wait_s``, at most 60).
- ``GET /api/swell/cluster``: the cluster token, so that another process of the admin
  token's holder can make handle calls (``swell.get_app_handle`` outside the instance).
- ``GET /api/swell/ingress/{app}``: the name of an application's ingress deployment.
- ``GET /metrics``: the node's Prometheus exposition (see ``_node_metrics.py``).
- ``GET /dashboard``: the status page, a static HTML file that holds no data; it reads the
  read-only token from its URL's fragment and polls ``GET /api/swell/dashboard`` with it.
- ``GET /api/swell/logs?app=&deployment=&cursor=``: log records merged in time order and
  the cursor to pass next time (``swell logs``).
- ``GET /-/healthz``: liveness, the one path open to anyone.

Everything else requires the admin token (``Authorization: Bearer`` or
``x-ray-authorization: Bearer``), on loopback too; routers' paths also take the cluster token.
``/metrics`` and the dashboard's data also take the *view token*, derived from the admin token
(``view_token()``) and good for nothing else: it is what Prometheus and the page's URL carry.
Requests whose ``Host`` is not an address the API is bound to are refused, so a web page cannot
reach it through DNS rebinding.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Collection
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from swell._controller.dashboard_page import page_response
from swell._protocol import (
    ADMIN_HEALTH_PATH,
    ADMIN_TOKEN_HEADERS,
    APPLICATIONS_PATH,
    CLUSTER_PATH,
    CLUSTER_TOKEN_HEADER,
    DASHBOARD_DATA_PATH,
    DASHBOARD_PATH,
    DEMAND_PREFIX,
    INGRESS_PREFIX,
    LOGS_PATH,
    METRICS_PATH,
    REPLICA_SETS_PREFIX,
    SHUTDOWN_PATH,
)
from swell.exceptions import ConfigError

_MAX_CONFIG_BYTES = 16 << 20
_API_TYPES = ("declarative", "imperative", "unknown")  # Ray Serve's values
# What a cluster member (a replica, a process that joined) may read with the cluster token.
_CLUSTER_PATHS = (REPLICA_SETS_PREFIX, DEMAND_PREFIX, INGRESS_PREFIX)
# Paths that only read, and so also take the view token.
_VIEW_PATHS = (METRICS_PATH, DASHBOARD_DATA_PATH)
# Paths open without a token: liveness, and the status page's static HTML.
_OPEN_PATHS = (ADMIN_HEALTH_PATH, DASHBOARD_PATH)


def view_token(admin_token: str) -> str:
    """A read-only token for ``/metrics`` and the status page's data, derived from the admin
    token so nothing more is stored; knowing it reveals nothing about the admin token."""
    return hmac.new(admin_token.encode(), b"swell view token v1", hashlib.sha256).hexdigest()


class AdminBackend(Protocol):
    def status_document(self) -> dict[str, Any]: ...

    def submit_config(self, document: Any) -> None: ...

    async def delete_all(self) -> None: ...

    def request_stop(self) -> None: ...

    async def watch_replica_set(
        self, app_name: str, deployment: str, known_version: int, wait_s: float
    ) -> dict[str, Any] | None: ...

    def note_demand(self, app_name: str, deployment: str) -> bool: ...

    def ingress_deployment(self, app_name: str) -> str | None: ...

    async def metrics_text(self) -> str: ...

    async def dashboard_document(self) -> dict[str, Any]: ...

    def read_logs(
        self, app_name: str | None, deployment: str | None, cursor: dict[str, int] | None
    ) -> dict[str, Any]: ...


def allowed_hosts(bind_host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` values a request may carry; None (any) when bound to every interface,
    where the token alone guards it (a cluster reaches it by names swell cannot know)."""
    if bind_host in ("0.0.0.0", "::", ""):
        return None
    names = {bind_host, f"[{bind_host}]" if ":" in bind_host else bind_host}
    if bind_host in ("127.0.0.1", "localhost", "::1"):
        names |= {"127.0.0.1", "localhost", "[::1]"}
    return frozenset(f"{name}:{port}" for name in names)


class _Guard:
    """Authentication and the Host check in front of every route but the health check."""

    def __init__(
        self,
        app: ASGIApp,
        token: str,
        cluster_token: str,
        hosts: Collection[str] | None,
    ) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()
        self._view = f"Bearer {view_token(token)}".encode()
        self._cluster_token = cluster_token.encode()
        self._hosts = {host.encode() for host in hosts} if hosts is not None else None

    def _problem(self, scope: Scope) -> tuple[int, str] | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value)
        if self._hosts is not None and headers.get(b"host", b"") not in self._hosts:
            return 403, (
                f"Host {headers.get(b'host', b'').decode(errors='replace')!r} is not this "
                "admin API's address; connect to the address it is bound to"
            )
        path = scope["path"]
        if path in _OPEN_PATHS:
            return None
        for name in ADMIN_TOKEN_HEADERS:
            if hmac.compare_digest(headers.get(name.encode(), b""), self._expected):
                return None
            if path in _VIEW_PATHS and hmac.compare_digest(
                headers.get(name.encode(), b""), self._view
            ):
                return None
        # Routers in replicas prove membership with the cluster token for their watch.
        if path.startswith(_CLUSTER_PATHS) and hmac.compare_digest(
            headers.get(CLUSTER_TOKEN_HEADER.encode(), b""), self._cluster_token
        ):
            return None
        return 401, (
            "this admin API requires its token as 'Authorization: Bearer <token>' (the swell "
            "CLI reads it from the file swell start wrote; see --token-file)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            problem = self._problem(scope)
            if problem is not None:
                status, message = problem
                headers = {"www-authenticate": "Bearer"} if status == 401 else None
                response = JSONResponse({"error": message}, status, headers=headers)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def build_admin_app(
    backend: AdminBackend,
    token: str,
    cluster_token: str,
    hosts: Collection[str] | None = None,
    tls_ca: str | None = None,
) -> ASGIApp:
    """``tls_ca``: replicas' data plane uses TLS; a process joining the cluster learns the CA
    (a path on this machine) with the cluster token."""

    async def applications(request: Request) -> Response:
        if request.method == "GET":
            api_type = request.query_params.get("api_type")
            if api_type is not None and api_type not in _API_TYPES:
                return JSONResponse(
                    {"error": f"api_type={api_type!r} is not one of {list(_API_TYPES)}"}, 400
                )
            return JSONResponse(backend.status_document())
        if request.method == "DELETE":
            await backend.delete_all()
            return JSONResponse({"deleted": True})
        body = await request.body()
        if len(body) > _MAX_CONFIG_BYTES:
            return JSONResponse({"error": f"a config is at most {_MAX_CONFIG_BYTES} bytes"}, 413)
        try:
            document = json.loads(body)
        except ValueError as error:
            return JSONResponse({"error": f"the request body is not JSON: {error}"}, 400)
        try:
            backend.submit_config(document)
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

    async def logs(request: Request) -> JSONResponse:
        params = request.query_params
        try:
            cursor = json.loads(params["cursor"]) if "cursor" in params else None
            if cursor is not None and not (
                isinstance(cursor, dict)
                and all(isinstance(v, int) and not isinstance(v, bool) for v in cursor.values())
            ):
                raise ValueError("not an object of byte offsets")
        except ValueError as error:
            return JSONResponse({"error": f"cursor: {error}; pass the one returned"}, 400)
        document = await asyncio.get_running_loop().run_in_executor(
            None, backend.read_logs, params.get("app"), params.get("deployment"), cursor
        )
        return JSONResponse(document)

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def cluster(request: Request) -> JSONResponse:
        return JSONResponse({"cluster_token": cluster_token, "tls_ca": tls_ca})

    async def ingress(request: Request) -> JSONResponse:
        app_name = request.path_params["app"]
        deployment = backend.ingress_deployment(app_name)
        if deployment is None:
            return JSONResponse({"error": f"No application named {app_name!r} is running."}, 404)
        return JSONResponse({"deployment": deployment})

    async def metrics(request: Request) -> Response:
        text = await backend.metrics_text()
        return Response(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def dashboard(request: Request) -> Response:
        return page_response()

    async def dashboard_data(request: Request) -> JSONResponse:
        return JSONResponse(
            await backend.dashboard_document(), headers={"cache-control": "no-store"}
        )

    app = Starlette(
        routes=[
            Route(APPLICATIONS_PATH, applications, methods=["GET", "PUT", "DELETE"]),
            Route(SHUTDOWN_PATH, shutdown, methods=["POST"]),
            Route(REPLICA_SETS_PREFIX + "{app}/{deployment}", replica_set, methods=["GET"]),
            Route(DEMAND_PREFIX + "{app}/{deployment}", demand, methods=["POST"]),
            Route(LOGS_PATH, logs, methods=["GET"]),
            Route(ADMIN_HEALTH_PATH, healthz, methods=["GET"]),
            Route(CLUSTER_PATH, cluster, methods=["GET"]),
            Route(INGRESS_PREFIX + "{app}", ingress, methods=["GET"]),
            Route(METRICS_PATH, metrics, methods=["GET"]),
            Route(DASHBOARD_PATH, dashboard, methods=["GET"]),
            Route(DASHBOARD_DATA_PATH, dashboard_data, methods=["GET"]),
        ]
    )
    return _Guard(app, token, cluster_token, hosts)
