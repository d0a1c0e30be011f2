"""Render HAProxy's configuration from the ingress state: a pure function, tested on golden files.

The rendered file always describes the whole current state (routes, servers, drain state), and
the manager rewrites it on every change, so any start or reload of HAProxy (a route change, a
restart after a crash) begins from what the runtime API had built. Its ``description`` carries
a generation number that tells which file a worker loaded.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from swell._ingress import haproxy_log, model_affinity
from swell._protocol import (
    CONTROL_READY_PATH,
    DRAINING_BACKEND,
    DRAINING_FLAG,
    INGRESS_DRAINING,
    INGRESS_HEALTH_PATH,
    INGRESS_HEALTHY,
    INGRESS_NO_REPLICAS,
    INGRESS_NO_ROUTES,
    NO_ROUTE_BACKEND,
    REQUEST_ID_HEADER,
    ROUTE_PREFIX_HEADER,
    WAKE_SERVER,
    backend_name,
)
from swell.config import HTTPOptions, gRPCOptions

CHECK_INTERVAL_MS = 1000
GENERATION_PREFIX = "swell generation "
REPLICA_CA_BACKEND = "swell_replica_ca"
_GENERATION_PATTERN = re.compile(re.escape(GENERATION_PREFIX) + r"(\d+)")

# A client's X-Request-ID is kept only when it is short and plain; otherwise HAProxy makes one.
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:@+=/~-]{1,128}$"
# Methods whose request may be sent again after a replica failed mid-answer (RFC 9110's
# idempotent methods; METH_GET covers HEAD too). Connection failures are retried for any method.
_IDEMPOTENT = "METH_GET || METH_OPTIONS || METH_PUT || METH_DELETE"


@dataclass(frozen=True)
class TLSSettings:
    """HTTPS at the ingress: the cert+key bundle swell built, and the client CA if required."""

    bundle_path: str
    client_ca_path: str | None = None


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
    header_timeout_s: float
    client_timeout_s: float
    tunnel_timeout_s: float
    max_body_bytes: int
    # The controller's wake-up server: every app's backup, for scale from zero.
    wake_address: str | None = None
    tls: TLSSettings | None = None
    # The gRPC frontend's port (grpc_options.port), when gRPC is served; see grpc_routes.py.
    grpc_port: int | None = None
    # HAProxy's Prometheus exporter on this unix socket (None: the binary has none).
    metrics_socket_path: str | None = None
    # An access line per request on HAProxy's output (haproxy_log.py).
    access_log: bool = False
    # The cluster CA replicas are verified against (--tls-cert), loaded at start (see render).
    replica_ca: str | None = None

    @classmethod
    def from_options(
        cls,
        options: HTTPOptions,
        socket_path: str,
        global_maxconn: int,
        wake_address: str | None = None,
        tls: TLSSettings | None = None,
        grpc: gRPCOptions | None = None,
    ) -> IngressSettings:
        """The settings ``http_options`` asks for (their defaults live in config.py only)."""
        return cls(
            bind_host=options.host,
            bind_port=options.port,
            socket_path=socket_path,
            global_maxconn=global_maxconn,
            queue_timeout_s=options.queue_timeout_s,
            keep_alive_timeout_s=options.keep_alive_timeout_s,
            request_timeout_s=options.request_timeout_s,
            header_timeout_s=options.request_header_timeout_s,
            client_timeout_s=options.client_timeout_s,
            tunnel_timeout_s=options.tunnel_timeout_s,
            max_body_bytes=options.max_request_body_bytes,
            wake_address=wake_address,
            tls=tls,
            grpc_port=grpc.port if grpc is not None and grpc.enabled else None,
        )


@dataclass(frozen=True)
class ServerEntry:
    """One replica inside an application's backend."""

    name: str
    address: str
    maxconn: int
    draining: bool = False
    # Where HAProxy's health check goes (the replica's control listener); None: ``address``.
    check_port: int | None = None
    # The replica's gRPC listener, when it serves gRPC (grpc_routes.py makes its entry).
    grpc_port: int | None = None
    # "h2" for a gRPC server: HAProxy speaks HTTP/2 to it (health checks stay HTTP/1.1).
    proto: str | None = None
    # The cluster CA when replicas listen with TLS (--tls-cert): HAProxy verifies their
    # certificate against it, for requests and health checks.
    tls_ca: str | None = None


@dataclass(frozen=True)
class BackendEntry:
    """One application: its route prefix and its ingress replicas."""

    app_name: str
    route_prefix: str
    servers: tuple[ServerEntry, ...] = field(default_factory=tuple)
    # The ingress deployment's max_queued_requests: requests waiting in HAProxy's queue for
    # this app beyond it get a 503 at once, as Ray's proxy answers (-1: no limit).
    max_queued_requests: int = -1

    @property
    def name(self) -> str:
        return backend_name(self.app_name)


def server_arguments(server: ServerEntry) -> str:
    """The words after ``server NAME`` — shared by the file and the runtime API's add server."""
    words = [
        server.address,
        f"maxconn {server.maxconn}",
        f"check inter {CHECK_INTERVAL_MS} fall 2 rise 1",
    ]
    if server.check_port is not None:
        words.append(f"port {server.check_port}")
    if server.proto is not None:
        words.append(f"proto {server.proto} check-proto h1")
    if server.tls_ca is not None:
        words.append(_replica_tls_words(server))
    # Servers added at runtime get no idle-connection pool unless asked: without these,
    # every request would open (and reset) a new connection to the replica.
    words.append("pool-max-conn -1 pool-purge-delay 5s")
    if server.draining:
        words.append("weight 0")
    return " ".join(words)


def _replica_tls_words(server: ServerEntry) -> str:
    """TLS to a replica, verified against the cluster CA only.

    Neither ``sni`` nor ``verifyhost``: replicas are reached by IP, and with no name to match
    HAProxy (2.6 and 2.8) checks the chain alone, as swell's own callers do. The health check
    goes to the control port (``port``), which does not inherit ``ssl``: ``check-ssl`` says so.
    A gRPC server negotiates h2 by ALPN; its checks (HTTP/1.1 to the control port) do not.
    """
    words = ["ssl", "check-ssl"]
    if server.proto == "h2":
        words += ["alpn h2", "check-alpn http/1.1"]
    # Unquoted: the runtime API's add server takes words; _cluster_tls allows no spaces.
    words += ["verify required", f"ca-file {server.tls_ca}"]
    return " ".join(words)


def _replica_ca_backend(ca: str) -> list[str]:
    """A never-used server that names the cluster CA, so HAProxy loads it at start: a server
    added through the runtime API may only use a CA file HAProxy has already loaded."""
    return [
        "",
        f"backend {REPLICA_CA_BACKEND}",
        f"    server {REPLICA_CA_BACKEND} 127.0.0.1:9 disabled ssl verify required ca-file {ca}",
    ]


def parse_generation(description: str) -> int | None:
    """The generation number in a ``show info`` description, if swell wrote it."""
    match = _GENERATION_PATTERN.search(description)
    return int(match.group(1)) if match else None


def _seconds(value: float) -> str:
    return f"{max(1, round(value * 1000))}ms"


def _quoted(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return '"' + escaped + '"'


def _route_condition(prefix: str) -> str:
    return f"{{ path {prefix} }} || {{ path_beg {prefix}/ }}"


def _bind_line(settings: IngressSettings) -> str:
    line = f"    bind {settings.bind_host}:{settings.bind_port}"
    tls = settings.tls
    if tls is None:
        return line
    line += f" ssl crt {_quoted(tls.bundle_path)} alpn h2,http/1.1"
    if tls.client_ca_path is not None:
        line += f" ca-file {_quoted(tls.client_ca_path)} verify required"
    return line


def _text_answer(status: int, body: str, condition: str) -> str:
    return (
        f"    http-request return status {status} content-type text/plain "
        f"string {_quoted(body)} if {condition}"
    )


def _health_rules(backends: list[BackendEntry]) -> list[str]:
    """``/-/healthz``, answered by HAProxy from its own view of the servers.

    An application can serve when its backend has a usable (up, not draining) replica. The
    wake-up server is a backup, and ``nbsrv`` counts a backup when no replica is up, so a
    replica is recognised by ``be_conn_free`` instead: replicas always have a ``maxconn``, so it
    is >= 0 while one is usable, and -1 once only the unlimited wake-up server is left.
    ``nbsrv`` > 0 still guards a backend without the wake-up server (there, 0 means none).
    """
    probe = "swell_healthz"
    lines = [
        f"    acl {probe} path {INGRESS_HEALTH_PATH}",
        _text_answer(503, INGRESS_DRAINING, f"{probe} {{ nbsrv({DRAINING_BACKEND}) gt 0 }}"),
    ]
    if not backends:
        return [*lines, _text_answer(503, INGRESS_NO_ROUTES, probe)]
    live = " || ".join(
        f"{probe} {{ nbsrv({b.name}) gt 0 }} {{ be_conn_free({b.name}) ge 0 }}"
        for b in sorted(backends, key=lambda b: b.app_name)
    )
    return [
        *lines,
        _text_answer(200, INGRESS_HEALTHY, live),
        _text_answer(503, INGRESS_NO_REPLICAS, probe),
    ]


def _frontend(settings: IngressSettings, backends: list[BackendEntry]) -> list[str]:
    routes = {b.route_prefix: b.app_name for b in sorted(backends, key=lambda b: b.route_prefix)}
    request_id = "var(txn.swell_request_id)"
    lines = [
        "frontend swell_http",
        _bind_line(settings),
        # Every request gets an id: the client's if it is sane, else a random UUID. It goes to
        # the replica and back on every answer, HAProxy's own (404, 413, 503) included.
        "    unique-id-format %[uuid()]",
        f"    acl swell_client_request_id req.fhdr({REQUEST_ID_HEADER}) "
        f"-m reg {REQUEST_ID_PATTERN}",
        f"    http-request set-var(txn.swell_request_id) req.fhdr({REQUEST_ID_HEADER}) "
        "if swell_client_request_id",
        "    http-request set-var(txn.swell_request_id) unique-id unless swell_client_request_id",
        f"    http-request set-header {REQUEST_ID_HEADER} %[{request_id}]",
        f"    http-after-response set-header {REQUEST_ID_HEADER} %[{request_id}] "
        f"if {{ {request_id} -m found }}",
        f"    http-request deny deny_status 413 if {{ req.hdr_val(content-length) gt "
        f"{settings.max_body_bytes} }}",
        # A request the replica may have acted on is sent again only if it is idempotent.
        f"    http-request disable-l7-retry unless {_IDEMPOTENT}",
        *(
            haproxy_log.frontend_lines(f"{{ path {INGRESS_HEALTH_PATH} }}")
            if settings.access_log
            else []
        ),
        *_health_rules(backends),
        "    http-request return status 200 content-type application/json string "
        f"{_quoted(json.dumps(routes, separators=(',', ':')))} if {{ path /-/routes }}",
    ]
    root_backend = NO_ROUTE_BACKEND
    for backend in sorted(backends, key=lambda b: len(b.route_prefix), reverse=True):
        if backend.route_prefix == "/":
            root_backend = backend.name
            continue
        lines.append(f"    use_backend {backend.name} if {_route_condition(backend.route_prefix)}")
    lines.append(f"    default_backend {root_backend}")
    return lines


def _queue_limit_lines(backend: BackendEntry) -> list[str]:
    """Shed load once ``max_queued_requests`` requests already wait for this app's replicas."""
    if backend.max_queued_requests < 0:
        return []
    message = (
        f"Application '{backend.app_name}' has {backend.max_queued_requests} requests waiting "
        "for its replicas already (max_queued_requests); try again later."
    )
    return [
        f"    http-request return status 503 content-type text/plain string {_quoted(message)} "
        f"if {{ queue({backend.name}) ge {backend.max_queued_requests} }}"
    ]


def _metrics_frontend(settings: IngressSettings) -> list[str]:
    """HAProxy's own numbers for the node's scrape endpoint, on a private unix socket."""
    if settings.metrics_socket_path is None:
        return []
    return [
        "",
        "frontend swell_metrics",
        f"    bind {_quoted('unix@' + settings.metrics_socket_path)} mode 600",
        "    http-request use-service prometheus-exporter",
    ]


def render(
    settings: IngressSettings,
    backends: list[BackendEntry],
    generation: int = 1,
    draining: bool = False,
) -> str:
    """The complete haproxy.cfg for these settings and applications; ``draining``: the node's
    ingress is stopping, and its health check says so."""
    server_timeout = settings.request_timeout_s or 3600.0
    lines = [
        "# Written by swell; rewritten on every change of routes or servers. Do not edit.",
        "global",
        f"    description {_quoted(f'{GENERATION_PREFIX}{generation}')}",
        f"    stats socket {_quoted(settings.socket_path)} mode 600 level admin "
        "expose-fd listeners",
        "    stats timeout 30s",
        f"    maxconn {settings.global_maxconn}",
        "",
        "defaults",
        "    mode http",
        "    timeout connect 5s",
        # Client silence while HAProxy waits to read from or write to it; a replica pausing
        # a stream is the server timeout's business.
        f"    timeout client {_seconds(settings.client_timeout_s)}",
        f"    timeout server {_seconds(server_timeout)}",
        f"    timeout http-keep-alive {_seconds(settings.keep_alive_timeout_s)}",
        # An upgraded connection (WebSocket) may idle this long in both directions.
        f"    timeout tunnel {_seconds(settings.tunnel_timeout_s)}",
        # Headers (and, in app backends, the first buffer of the body) must arrive within
        # this, however slowly they trickle: slow clients are cut before they hold a slot.
        f"    timeout http-request {_seconds(settings.header_timeout_s)}",
        f"    timeout queue {_seconds(settings.queue_timeout_s)}",
        "    retries 3",
        # 503 from a replica means "not here, try another" (a replica it called died, or its
        # queue is full); like the rest of layer 7, only idempotent requests are retried.
        "    retry-on conn-failure empty-response 503",
        "    option redispatch 1",
        "    http-reuse always",
        # A client that goes away aborts its request at the replica too (cancelling work).
        "    option abortonclose",
        # On a reload the old worker answers an idle keep-alive client's next request (with
        # "Connection: close") instead of closing under it: no failed request per reload.
        "    option idle-close-on-response",
        # Streamed chunks (tokens, SSE) go out as they come, not merged for ~200 ms.
        "    option http-no-delay",
        "",
        *_frontend(settings, backends),
        *_metrics_frontend(settings),
        "",
        f"backend {NO_ROUTE_BACKEND}",
        "    http-request return status 404 content-type text/plain string "
        '"No application is served at this path; GET /-/routes lists the routes."',
        "",
        f"backend {DRAINING_BACKEND}",
        # Never connected to: only its state counts (see _health_rules).
        f"    server {DRAINING_FLAG} 127.0.0.1:9" + ("" if draining else " disabled"),
    ]
    for backend in sorted(backends, key=lambda b: b.app_name):
        lines += [
            "",
            f"backend {backend.name}",
            "    balance leastconn",
            f"    option httpchk GET {CONTROL_READY_PATH}",
            "    http-check expect status 200",
            # Wait for the body's first buffer here, not in the frontend: the frontend's rules
            # (413 on a too-large Content-Length) run as soon as the headers are in.
            "    option http-buffer-request",
            # The replica learns its prefix from each request; a client's value never counts.
            f"    http-request set-header {ROUTE_PREFIX_HEADER} {_quoted(backend.route_prefix)}",
            *model_affinity.backend_lines(backend.name),
            *_queue_limit_lines(backend),
        ]
        lines += [f"    server {s.name} {server_arguments(s)}" for s in backend.servers]
        if settings.wake_address is not None:
            lines.append(
                f"    server {WAKE_SERVER} {settings.wake_address} backup "
                f"{model_affinity.WAKE_SERVER_WORDS}"
                # The controller's wake-up server uses the cluster certificate too.
                + (
                    f" ssl verify required ca-file {settings.replica_ca}"
                    if settings.replica_ca
                    else ""
                )
            )
    if settings.replica_ca is not None:
        lines += _replica_ca_backend(settings.replica_ca)
    if settings.grpc_port is not None:
        # Imported here: grpc_routes builds on this module's entries.
        from swell._ingress.grpc_routes import render_grpc

        lines += render_grpc(settings.bind_host, settings.grpc_port, backends)
    return "\n".join(lines) + "\n"
