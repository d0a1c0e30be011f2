"""The gRPC ingress in HAProxy: a frontend on ``grpc_options.port`` and a backend per app.

gRPC is HTTP/2, so HAProxy serves it in HTTP mode: the frontend binds with ``proto h2``
(cleartext HTTP/2, as gRPC clients speak without TLS) and picks the application's backend by
the ``application`` metadata (a request header), as Ray Serve's gRPC proxy does; with a single
application the metadata may be left out. Each backend holds the same replicas as the app's
HTTP backend, at their gRPC ports, spoken to with ``proto h2``; their health checks go to the
replicas' control listener over HTTP/1.1, so a draining replica leaves both backends together.

The desired gRPC backends are derived from the HTTP ones (``grpc_backends``), so membership
needs no state of its own: the manager repairs them with the same plan as the HTTP backends.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from swell._ingress.haproxy_config import BackendEntry, ServerEntry, server_arguments
from swell._ingress.haproxy_reconcile import apply_repair, plan_repairs
from swell._ingress.haproxy_runtime import HAProxyRuntime
from swell._protocol import (
    CONTROL_READY_PATH,
    DRAINING_BACKEND,
    GRPC_API_SERVICE,
    GRPC_APPLICATION_METADATA,
    GRPC_APPLICATIONS_HEADER,
    GRPC_NO_APP_BACKEND,
    grpc_backend_name,
)

_FRONTEND = "swell_grpc"
# gRPC status codes HAProxy answers with itself: no such application, and cannot serve now.
_NOT_FOUND = 5
_UNAVAILABLE = 14


@dataclass(frozen=True)
class GrpcBackendEntry(BackendEntry):
    """An application's gRPC backend: the same replicas, at their gRPC ports."""

    @property
    def name(self) -> str:
        return grpc_backend_name(self.app_name)


def _grpc_server(server: ServerEntry) -> ServerEntry | None:
    if server.grpc_port is None:
        return None
    host = server.address.rpartition(":")[0]
    return replace(server, address=f"{host}:{server.grpc_port}", grpc_port=None, proto="h2")


def grpc_backends(backends: list[BackendEntry]) -> list[BackendEntry]:
    """The gRPC backend of each application, with its replicas that serve gRPC."""
    result: list[BackendEntry] = []
    for backend in backends:
        servers = tuple(s for s in map(_grpc_server, backend.servers) if s is not None)
        result.append(GrpcBackendEntry(backend.app_name, backend.route_prefix, servers))
    return result


async def sync_grpc(runtime: HAProxyRuntime, backend: BackendEntry) -> None:
    """Make one application's gRPC backend match its HTTP backend (after a membership change)."""
    desired = grpc_backends([backend])
    observed = await runtime.servers_state()
    for repair in plan_repairs(desired, observed):
        await apply_repair(runtime, repair)


def _grpc_return(message: str, condition: str = "", code: int = _NOT_FOUND) -> str:
    """A trailers-only gRPC answer from HAProxy itself (grpc-status in the headers)."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    line = f'    http-request return status 200 hdr grpc-status {code} hdr grpc-message "{escaped}"'
    return f"{line} {condition}" if condition else line


def render_grpc(host: str, port: int, backends: list[BackendEntry]) -> list[str]:
    """The config lines of the gRPC frontend, its not-found answer and every app's backend."""
    apps = sorted(b.app_name for b in backends)
    metadata = f"req.hdr({GRPC_APPLICATION_METADATA})"
    lines = [
        "",
        f"frontend {_FRONTEND}",
        f"    bind {host}:{port} proto h2",
        # A call the replica may have started is never sent again.
        "    http-request disable-l7-retry",
        # HAProxy's own answers carry no body, so `return` gives them no content-type.
        "    http-after-response set-header content-type application/grpc "
        "unless { res.hdr(content-type) -m found }",
        f"    acl swell_grpc_app_given {metadata} -m found",
        f"    acl swell_grpc_api path_beg /{GRPC_API_SERVICE}/",
        # Ray's health service: UNAVAILABLE while this node's ingress drains; else any
        # application's replica answers, told every application's name.
        _grpc_return(
            "draining", f"if swell_grpc_api {{ nbsrv({DRAINING_BACKEND}) gt 0 }}", _UNAVAILABLE
        ),
        # App names are letters, digits, '_', '.', '-' only: safe inside quotes as they are.
        f'    http-request set-header {GRPC_APPLICATIONS_HEADER} "{",".join(apps)}"'
        if apps
        else f"    http-request del-header {GRPC_APPLICATIONS_HEADER}",
    ]
    for app in apps:
        target = grpc_backend_name(app)
        lines.append(f"    use_backend {target} if swell_grpc_api {{ nbsrv({target}) gt 0 }}")
    for app in apps:
        lines.append(f"    use_backend {grpc_backend_name(app)} if {{ {metadata} -m str {app} }}")
    if len(apps) == 1:
        # Ray Serve's rule: with one application, the metadata may be left out.
        lines.append(f"    use_backend {grpc_backend_name(apps[0])} unless swell_grpc_app_given")
    lines.append(f"    default_backend {GRPC_NO_APP_BACKEND}")
    listed = ", ".join(apps) if apps else "(none deployed)"
    lines += [
        "",
        f"backend {GRPC_NO_APP_BACKEND}",
        _grpc_return(
            "no application has a replica serving yet",
            f"if {{ path_beg /{GRPC_API_SERVICE}/ }}",
            _UNAVAILABLE,
        ),
        _grpc_return(
            f"Application '%[{metadata}]' not found; set the '{GRPC_APPLICATION_METADATA}' "
            f"metadata to one of: {listed}",
            f"if {{ {metadata} -m found }}",
        ),
        _grpc_return(
            f"Set the '{GRPC_APPLICATION_METADATA}' metadata to the application to call, "
            f"one of: {listed}"
        ),
    ]
    for backend in grpc_backends(sorted(backends, key=lambda b: b.app_name)):
        lines += [
            "",
            f"backend {backend.name}",
            "    balance leastconn",
            f"    option httpchk GET {CONTROL_READY_PATH}",
            "    http-check expect status 200",
        ]
        lines += [f"    server {s.name} {server_arguments(s)}" for s in backend.servers]
    return lines
