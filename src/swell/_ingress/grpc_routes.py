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
    GRPC_APPLICATION_METADATA,
    GRPC_NO_APP_BACKEND,
    grpc_backend_name,
)

_FRONTEND = "swell_grpc"
# gRPC status NOT_FOUND, as Ray Serve answers a call for no (or an unknown) application.
_NOT_FOUND = 5


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


def _grpc_return(message: str, condition: str = "") -> str:
    """A trailers-only gRPC answer from HAProxy itself (grpc-status in the headers)."""
    escaped = message.replace("\\", "\\\\").replace('"', '\\"')
    line = (
        "    http-request return status 200 "
        f'hdr grpc-status {_NOT_FOUND} hdr grpc-message "{escaped}"'
    )
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
        f"    acl swell_grpc_app_given {metadata} -m found",
    ]
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
        # An answer without a body gets no content-type from `return`; gRPC clients want one.
        "    http-after-response set-header content-type application/grpc",
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
