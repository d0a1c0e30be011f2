"""Render HAProxy's configuration from the ingress state: a pure function, tested on golden files.

The rendered file always describes the whole current state (routes and servers), so a reload
(only ever needed for a route change) starts from what the runtime API had built.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from swell._protocol import CONTROL_READY_PATH, NO_ROUTE_BACKEND, WAKE_SERVER, backend_name

CHECK_INTERVAL_MS = 1000


@dataclass(frozen=True)
class IngressSettings:
    """Everything about HAProxy that does not change while it runs."""

    bind_host: str
    bind_port: int
    socket_path: str
    global_maxconn: int
    queue_timeout_s: float
    keep_alive_timeout_s: float
    request_timeout_s: float | None
    # The controller's wake-up server: every app's backup, for scale from zero.
    wake_address: str | None = None


@dataclass(frozen=True)
class ServerEntry:
    """One replica inside an application's backend."""

    name: str
    address: str
    maxconn: int
    draining: bool = False
    # Where HAProxy's readiness check goes: the replica's control port.
    check_port: int | None = None


@dataclass(frozen=True)
class BackendEntry:
    """One application: its route prefix and its ingress replicas."""

    app_name: str
    route_prefix: str
    servers: tuple[ServerEntry, ...] = field(default_factory=tuple)

    @property
    def name(self) -> str:
        return backend_name(self.app_name)


def server_arguments(server: ServerEntry) -> str:
    """The words after ``server NAME`` — shared by the file and the runtime API's add server."""
    words = [
        server.address,
        f"maxconn {server.maxconn}",
        f"check inter {CHECK_INTERVAL_MS} fall 2 rise 1",
        *([f"port {server.check_port}"] if server.check_port is not None else []),
        # Servers added at runtime get no idle-connection pool unless asked: without these,
        # every request would open (and reset) a new connection to the replica.
        "pool-max-conn -1 pool-purge-delay 5s",
    ]
    if server.draining:
        words.append("weight 0")
    return " ".join(words)


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + escaped + '"'


def _route_condition(prefix: str) -> str:
    return f"{{ path {prefix} }} || {{ path_beg {prefix}/ }}"


def render(settings: IngressSettings, backends: list[BackendEntry]) -> str:
    """The complete haproxy.cfg for these settings and applications."""
    long_timeout = settings.request_timeout_s or 3600.0
    routes = {b.route_prefix: b.app_name for b in sorted(backends, key=lambda b: b.route_prefix)}
    lines = [
        "# Written by swell; regenerated on every route change. Do not edit.",
        "global",
        f"    stats socket {settings.socket_path} mode 600 level admin expose-fd listeners",
        "    stats timeout 30s",
        f"    maxconn {settings.global_maxconn}",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        f"    timeout client {_seconds(long_timeout)}",
        f"    timeout server {_seconds(long_timeout)}",
        f"    timeout http-keep-alive {_seconds(settings.keep_alive_timeout_s)}",
        "    timeout http-request 30s",
        f"    timeout queue {_seconds(settings.queue_timeout_s)}",
        "    retries 3",
        "    retry-on conn-failure empty-response",
        "    option redispatch 1",
        "    http-reuse always",
        # A client that goes away aborts its request at the replica too (cancelling work).
        "    option abortonclose",
        # Streamed chunks (tokens, SSE) go out as they come, not merged for ~200 ms.
        "    option http-no-delay",
        "",
        "frontend swell_http",
        f"    bind {settings.bind_host}:{settings.bind_port}",
        '    http-request return status 200 content-type text/plain string "ok" '
        "if { path /-/healthz }",
        "    http-request return status 200 content-type application/json string "
        f"{_quoted(json.dumps(routes, separators=(',', ':')))} if {{ path /-/routes }}",
    ]
    root_backend = NO_ROUTE_BACKEND
    for backend in sorted(backends, key=lambda b: len(b.route_prefix), reverse=True):
        if backend.route_prefix == "/":
            root_backend = backend.name
            continue
        lines.append(f"    use_backend {backend.name} if {_route_condition(backend.route_prefix)}")
    lines += [
        f"    default_backend {root_backend}",
        "",
        f"backend {NO_ROUTE_BACKEND}",
        "    http-request return status 404 content-type text/plain string "
        '"No application is served at this path; GET /-/routes lists the routes."',
    ]
    for backend in sorted(backends, key=lambda b: b.app_name):
        lines += [
            "",
            f"backend {backend.name}",
            "    balance leastconn",
            f"    option httpchk GET {CONTROL_READY_PATH}",
            "    http-check expect status 200",
        ]
        lines += [f"    server {s.name} {server_arguments(s)}" for s in backend.servers]
        if settings.wake_address is not None:
            lines.append(f"    server {WAKE_SERVER} {settings.wake_address} backup")
    return "\n".join(lines) + "\n"
