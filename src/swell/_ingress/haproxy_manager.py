"""The ingress: the desired HAProxy state (routes, servers) and one supervised HAProxy serving it.

Desired state is kept here and written to the config file on every change, so whatever starts
HAProxy (a route change's reload, a restart after a crash) starts from all of it. Membership
changes then go to the running worker through the runtime API (never a reload), each as one
checked conversation; a periodic reconcile compares what HAProxy has with what is desired and
repairs the difference. If the master exits, it is restarted at once from the file; membership
calls meanwhile only change the desired state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from swell._ingress.grpc_routes import grpc_backends, sync_grpc
from swell._ingress.haproxy_config import (
    BackendEntry,
    IngressSettings,
    ServerEntry,
    render,
)
from swell._ingress.haproxy_exporter import exporter_available
from swell._ingress.haproxy_log import is_access_line
from swell._ingress.haproxy_process import (
    HAProxyProcess,
    check_config,
    ensure_port_free,
    find_haproxy_binary,
    global_maxconn,
    haproxy_version,
    version_at_least,
)
from swell._ingress.haproxy_reconcile import Repair, apply_repair, plan_repairs
from swell._ingress.haproxy_runtime import (
    HAProxyRefused,
    HAProxyRuntime,
    HAProxyUnavailable,
    UnixSocketTransport,
)
from swell._ingress.tls import build_bundle
from swell._private_files import write_private
from swell._procs import pid_alive
from swell._protocol import (
    DRAINING_BACKEND,
    DRAINING_FLAG,
    WAKE_SERVER,
    backend_name,
    grpc_backend_name,
)
from swell._tasks import TaskOwner
from swell.config import HTTPOptions, gRPCOptions
from swell.exceptions import HAProxyError

__all__ = [
    "HAProxyManager",
    "IngressStatus",
    "ensure_port_free",
    "find_haproxy_binary",
    "haproxy_version",
]

logger = logging.getLogger("swell.ingress")

_START_DEADLINE_S = 15.0
_RELOAD_DEADLINE_S = 15.0
_REMOVE_DEADLINE_S = 10.0
_RECONCILE_INTERVAL_S = 2.0
_RESTART_BACKOFF_S = (0.0, 0.5, 1.0, 2.0, 5.0)
_FAILED_AFTER = 3  # consecutive failed restarts before the status says FAILED
_POLL_S = 0.02
_REMOVE_POLL_S = 0.05


class IngressStatus(StrEnum):
    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    RESTARTING = "RESTARTING"
    FAILED = "FAILED"
    STOPPED = "STOPPED"


class HAProxyManager:
    """Owns one HAProxy master process and the desired ingress state it serves."""

    def __init__(
        self,
        options: HTTPOptions,
        runtime_dir: Path,
        wake_address: str | None = None,
        survive_controller: bool = False,
        grpc_options: gRPCOptions | None = None,
        log_path: Path | None = None,
        replica_ca: str | None = None,
    ) -> None:
        """``replica_ca``: replicas listen with TLS (--tls-cert); verify them against it."""
        self._options = options
        self._replica_ca = replica_ca
        self._runtime_dir = runtime_dir
        self.binary = find_haproxy_binary(options.haproxy_binary)
        self.version = ""
        self._settings = IngressSettings.from_options(
            options,
            str(runtime_dir / "haproxy.sock"),
            global_maxconn(),
            wake_address,
            grpc=grpc_options,
        )
        if replica_ca is not None:
            self._settings = replace(self._settings, replica_ca=replica_ca)
        if log_path is not None:
            # HAProxy's output and its access lines go to the instance's logs directory.
            self._settings = replace(self._settings, access_log=True)
        self._log_path = log_path or runtime_dir / "haproxy.log"
        self._config_path = runtime_dir / "haproxy.cfg"
        self._process = HAProxyProcess(
            self.binary,
            self._config_path,
            runtime_dir / "master.sock",
            self._log_path,
            survive_controller,
        )
        self._backends: dict[str, BackendEntry] = {}
        # The generation the serving worker must have loaded (None: unknown, any is accepted).
        self._generation: int | None = None
        self.runtime = HAProxyRuntime(
            UnixSocketTransport(self._settings.socket_path), lambda: self._generation
        )
        self._status = IngressStatus.STARTING
        self._restarts = 0
        self._last_error: str | None = None
        # Reloads and restarts, one at a time.
        self._lifecycle_lock = asyncio.Lock()
        # Conversations that change servers, and the reconcile pass, one at a time.
        self._runtime_lock = asyncio.Lock()
        self._owner = TaskOwner(logger, "ingress")
        self._stopping = False
        # Set once this node's ingress starts stopping: /-/healthz then answers "draining".
        self._draining = False

    # State and status ---------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid

    @property
    def backends(self) -> dict[str, BackendEntry]:
        return dict(self._backends)

    @property
    def address(self) -> str:
        return f"{self._options.host}:{self._options.port}"

    @property
    def status(self) -> IngressStatus:
        return self._status

    def describe(self) -> dict[str, Any]:
        """What the status page shows about this node's HAProxy: its real state."""
        return {
            "status": self._status.value,
            "pid": self.pid,
            "restarts": self._restarts,
            "last_error": self._last_error,
            "version": self.version,
            "binary": self.binary,
            "address": self.address,
            "tls": self._settings.tls is not None,
            "config_generation": self._generation,
        }

    @property
    def metrics_socket(self) -> str | None:
        """Where HAProxy's Prometheus exporter answers (None: this binary has none)."""
        return self._settings.metrics_socket_path

    def restore_backends(self, backends: dict[str, BackendEntry]) -> None:
        """Before a fresh start: serve the routes (and live servers) a checkpoint recorded."""
        self._backends = self._with_tls(backends)

    def _with_tls(self, backends: dict[str, BackendEntry]) -> dict[str, BackendEntry]:
        """Servers recorded elsewhere (a checkpoint, the Ray fleet) get this node's TLS setting."""
        return {
            name: replace(b, servers=tuple(replace(s, tls_ca=self._replica_ca) for s in b.servers))
            for name, b in backends.items()
        }

    def _write_config(self) -> None:
        """The file always holds the whole desired state: any start or reload begins there."""
        text = render(
            self._settings,
            list(self._backends.values()),
            self._generation or 0,
            draining=self._draining,
        )
        write_private(self._config_path, text.encode())

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Background work is named, owned (cancelled at stop) and logged if it crashes."""
        self._owner.spawn(coro, name)

    # Start, adopt, supervise, stop --------------------------------------------------------

    def _prepare(self) -> None:
        self.version = haproxy_version(self.binary)
        if exporter_available(self.binary):
            metrics_socket = str(self._runtime_dir / "metrics.sock")
            self._settings = replace(self._settings, metrics_socket_path=metrics_socket)
        self.runtime.wait_removable = version_at_least(self.version, (3, 0))
        self._settings = replace(self._settings, tls=build_bundle(self._options, self._runtime_dir))

    async def start(self) -> None:
        ensure_port_free(self._options.host, self._options.port, "HTTP (the HAProxy ingress)")
        if self._settings.grpc_port is not None:
            ensure_port_free(self._options.host, self._settings.grpc_port, "gRPC (grpc_options)")
        self._prepare()
        async with self._lifecycle_lock:
            self._generation = 1
            self._write_config()
            self._process.spawn()
            try:
                await self._wait_serving(_START_DEADLINE_S)
            except HAProxyError:
                await self._process.stop()
                raise
            self._serving()

    async def adopt(self, pid: int, backends: dict[str, BackendEntry]) -> bool:
        """Take over an HAProxy a previous controller left running, if it still answers.

        ``backends`` is what the previous controller had built; the reconcile pass repairs
        whatever HAProxy has that differs.
        """
        if not pid_alive(pid):
            return False
        try:
            info = await self.runtime.info()
        except HAProxyError:
            return False
        self._prepare()
        self._process.adopt(pid)
        self._generation = info.generation
        self._backends = self._with_tls(backends)
        self._write_config()
        self._serving()
        return True

    def _serving(self) -> None:
        self._status = IngressStatus.HEALTHY
        self._process.watch(self._on_exit)
        if not any(t.get_name() == "swell-haproxy-reconcile" for t in self._owner.tasks):
            self._spawn(self._reconcile_forever(), "swell-haproxy-reconcile")

    async def _wait_serving(self, deadline_s: float) -> None:
        """Until the worker that loaded this generation answers, or the master exits."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + deadline_s
        while True:
            if not self._process.alive():
                raise HAProxyError(
                    f"HAProxy ({self.binary}) exited with status {self._process.exit_status()} "
                    f"before serving config generation {self._generation}:\n{self._log_tail()}"
                )
            with contextlib.suppress(HAProxyError):
                info = await self.runtime.info()
                if info.generation == self._generation:
                    self._process.note_worker(info.pid)
                    return
            if loop.time() > deadline:
                raise HAProxyError(
                    f"HAProxy did not serve config generation {self._generation} within "
                    f"{deadline_s}s:\n{self._log_tail()}"
                )
            await asyncio.sleep(_POLL_S)

    def _log_tail(self) -> str:
        try:
            lines = self._log_path.read_text(errors="replace").splitlines()
            # HAProxy's own messages, not its access lines.
            return "\n".join([line for line in lines if not is_access_line(line)][-20:])
        except OSError:
            return "(no HAProxy log)"

    def _on_exit(self) -> None:
        """The master exited: unless swell is stopping it, start it again from the file."""
        if self._stopping:
            return
        self._last_error = (
            f"HAProxy master {self.pid} exited unexpectedly (status "
            f"{self._process.exit_status()}); restarting it"
        )
        logger.error("%s", self._last_error)
        self._status = IngressStatus.RESTARTING
        self._spawn(self._restart(), "swell-haproxy-restart")

    async def _restart(self) -> None:
        # A killed master's worker may still accept on the port: stopped once the new serves.
        orphan = self._process.take_worker()
        try:
            await self._restart_until_serving()
        finally:
            self._process.soft_stop(orphan)
        # Servers changed while it was down are in the file; anything else is repaired now.
        with contextlib.suppress(HAProxyError):
            await self.reconcile()

    async def _restart_until_serving(self) -> None:
        failures = 0
        while not self._stopping:
            await asyncio.sleep(_RESTART_BACKOFF_S[min(failures, len(_RESTART_BACKOFF_S) - 1)])
            async with self._lifecycle_lock:
                try:
                    self._generation = (self._generation or 0) + 1
                    self._write_config()
                    self._process.spawn()
                    await self._wait_serving(_START_DEADLINE_S)
                except HAProxyError as error:
                    failures += 1
                    self._last_error = f"restart {failures} failed: {error}"
                    logger.error("HAProxy %s", self._last_error)
                    if failures >= _FAILED_AFTER:
                        self._status = IngressStatus.FAILED
                    await self._process.stop()
                    continue
                self._restarts += 1
                self._serving()
                logger.warning("HAProxy restarted (pid %s)", self.pid)
                return

    async def mark_draining(self) -> None:
        """Tell health checks (KubeRay's probes, load balancers) that this node is going away,
        before its replicas drain: ``/-/healthz`` answers 503 "draining" from now on."""
        self._draining = True
        self._write_config()  # a restart or reload meanwhile keeps saying so
        if self._status is not IngressStatus.HEALTHY:
            return
        try:
            await self.runtime.ready_server(DRAINING_BACKEND, DRAINING_FLAG)
        except HAProxyError as error:
            logger.warning("could not mark the ingress as draining: %s", error)

    async def stop(self) -> None:
        self._stopping = True
        await self._owner.cancel_all()
        await self._process.stop()
        self._status = IngressStatus.STOPPED

    # Routes: the one change that needs a (hitless) reload ---------------------------------

    async def set_route(
        self, app_name: str, route_prefix: str, max_queued_requests: int = -1
    ) -> None:
        """Add or move an application's route, or change its queue limit."""
        existing = self._backends.get(app_name)
        if (
            existing is not None
            and existing.route_prefix == route_prefix
            and existing.max_queued_requests == max_queued_requests
        ):
            return
        servers = existing.servers if existing else ()
        await self._change_route(
            app_name, BackendEntry(app_name, route_prefix, servers, max_queued_requests)
        )

    async def remove_route(self, app_name: str) -> None:
        if app_name in self._backends:
            await self._change_route(app_name, None)

    async def _change_route(self, app_name: str, wanted: BackendEntry | None) -> None:
        """Apply one route change with a reload; if it fails, undo it (file included)."""
        async with self._lifecycle_lock:
            before = self._backends.get(app_name)
            self._put_backend(app_name, wanted)
            if self._status is not IngressStatus.HEALTHY:
                self._write_config()  # the restart in progress starts from it
                return
            try:
                await self._reload()
            except HAProxyError as error:
                # Undo only the route: servers added or removed meanwhile stay as they are.
                current = self._backends.get(app_name)
                if before is not None and current is not None:
                    before = replace(before, servers=current.servers)
                self._put_backend(app_name, before)
                self._write_config()
                raise HAProxyError(
                    f"Changing the route of application '{app_name}' failed, and was undone: "
                    f"{error}"
                ) from error

    def _put_backend(self, app_name: str, backend: BackendEntry | None) -> None:
        if backend is None:
            self._backends.pop(app_name, None)
        else:
            self._backends[app_name] = backend

    async def _reload(self) -> None:
        """Check the new file, reload once through the master CLI, and confirm that the new
        worker loaded it (its generation), instead of signalling until the pid changes."""
        generation = (self._generation or 0) + 1
        candidate = self._config_path.with_suffix(".new")
        candidate.write_text(
            render(
                self._settings,
                list(self._backends.values()),
                generation,
                draining=self._draining,
            )
        )
        problem = await asyncio.to_thread(check_config, self.binary, candidate)
        if problem is not None:
            candidate.unlink(missing_ok=True)
            raise HAProxyRefused(f"HAProxy rejects the new config:\n{problem}")
        good_generation = self._generation
        self._generation = generation
        self._write_config()  # with any change made while the check ran
        candidate.unlink(missing_ok=True)
        try:
            await self._process.reload()
            await self._wait_serving(_RELOAD_DEADLINE_S)
        except HAProxyError:
            # The old worker goes on serving the previous generation: the file says so again.
            self._generation = good_generation
            self._write_config()
            raise

    # Membership: runtime API only ---------------------------------------------------------

    def _with_servers(self, app_name: str, servers: tuple[ServerEntry, ...]) -> None:
        self._backends[app_name] = replace(self._backends[app_name], servers=servers)
        self._write_config()

    def _applies_now(self) -> bool:
        return self._status is IngressStatus.HEALTHY

    async def add_server(
        self,
        app_name: str,
        server_name: str,
        address: str,
        maxconn: int,
        check_port: int | None = None,
        grpc_port: int | None = None,
    ) -> None:
        """Put a replica in service; ``check_port``: where health checks go (else ``address``).

        While HAProxy restarts, only the desired state changes (the restart starts from it).
        A refusal by HAProxy undoes the change and raises; an HAProxy that does not answer is
        left to the reconcile pass.
        """
        backend = self._backends.get(app_name)
        if backend is None or any(s.name == server_name for s in backend.servers):
            return
        server = ServerEntry(
            server_name,
            address,
            maxconn,
            check_port=check_port,
            grpc_port=grpc_port,
            tls_ca=self._replica_ca,
        )
        self._with_servers(app_name, (*backend.servers, server))
        if not self._applies_now():
            return
        async with self._runtime_lock:
            try:
                await self.runtime.add_server(backend.name, server)
            except HAProxyRefused:
                current = self._backends.get(app_name)
                if current is None:
                    return  # the route was removed meanwhile, and its servers with it
                self._with_servers(
                    app_name, tuple(s for s in current.servers if s.name != server_name)
                )
                raise
            except HAProxyUnavailable as error:
                logger.warning("server %s: added on the next reconcile (%s)", server_name, error)
        await self._sync_grpc(app_name)

    async def drain_server(self, app_name: str, server_name: str) -> None:
        backend = self._backends.get(app_name)
        if backend is None or all(s.name != server_name for s in backend.servers):
            return
        servers = backend.servers
        self._with_servers(
            app_name,
            tuple(replace(s, draining=True) if s.name == server_name else s for s in servers),
        )
        if not self._applies_now():
            return
        async with self._runtime_lock:
            try:
                await self.runtime.drain_server(backend.name, server_name)
            except HAProxyError as error:
                logger.warning("server %s: drained on the next reconcile (%s)", server_name, error)
        await self._sync_grpc(app_name)

    async def remove_server(self, app_name: str, server_name: str) -> None:
        """Take a server out for good, waiting (bounded) until HAProxy lets it go.

        HAProxy refuses ``del server`` while idle pooled or finishing connections remain; those
        close within moments of maintenance, so the delete is retried until it succeeds or
        the deadline passes, after which the reconcile pass keeps trying.
        """
        backend = self._backends.get(app_name)
        if backend is None or all(s.name != server_name for s in backend.servers):
            return
        self._with_servers(app_name, tuple(s for s in backend.servers if s.name != server_name))
        if not self._applies_now():
            return
        await self._sync_grpc(app_name)
        try:
            await self._remove_from_haproxy(backend.name, server_name)
        except HAProxyError as error:
            logger.warning("server %s: removed on the next reconcile (%s)", server_name, error)

    async def _sync_grpc(self, app_name: str) -> None:
        """Bring the app's gRPC backend in line with its HTTP one (grpc_routes.py)."""
        backend = self._backends.get(app_name)
        if self._settings.grpc_port is None or backend is None or not self._applies_now():
            return
        async with self._runtime_lock:
            try:
                await sync_grpc(self.runtime, backend)
            except HAProxyError as error:
                logger.warning(
                    "gRPC backend of %s: synced on the next reconcile (%s)", app_name, error
                )

    async def _remove_from_haproxy(self, backend: str, server_name: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _REMOVE_DEADLINE_S
        async with self._runtime_lock:
            gone = await self.runtime.start_removal(backend, server_name)
        while not gone:
            if loop.time() > deadline:
                raise HAProxyUnavailable(
                    f"{backend}/{server_name} still had connections after {_REMOVE_DEADLINE_S}s"
                )
            if not self.runtime.wait_removable:
                await asyncio.sleep(_REMOVE_POLL_S)
            async with self._runtime_lock:
                gone = await self.runtime.try_delete(backend, server_name, wait_ms=1000)

    async def sessions(self, app_name: str) -> dict[str, int]:
        if not self._applies_now():
            raise HAProxyUnavailable(f"HAProxy is {self._status.value.lower()}")
        counts = await self.runtime.server_sessions(backend_name(app_name))
        if self._settings.grpc_port is not None:
            # gRPC calls in flight or queued are the app's too (draining, autoscaling).
            grpc = await self.runtime.server_sessions(grpc_backend_name(app_name))
            for name, count in grpc.items():
                counts[name] = counts.get(name, 0) + count
        return counts

    async def set_wake_address(self, address: str) -> None:
        """Point every backend's backup at this controller's wake-up server (after adoption)."""
        host, _, port = address.rpartition(":")
        self._settings = replace(self._settings, wake_address=address)
        self._write_config()
        async with self._runtime_lock:
            for backend in self._backends.values():
                await self.runtime.set_server_address(backend.name, WAKE_SERVER, host, int(port))

    # Reconcile ----------------------------------------------------------------------------

    async def _reconcile_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(_RECONCILE_INTERVAL_S)
            if not self._applies_now():
                continue
            try:
                await self.reconcile()
            except HAProxyError as error:
                logger.info("HAProxy reconcile pass skipped: %s", error)

    async def reconcile(self) -> list[Repair]:
        """Compare HAProxy's servers with the desired state and repair each difference."""
        if not await self._serves_current_generation():
            # The worker serving did not load the current file (a reload that finished after
            # its deadline, for one): load it now, unless a route change just did.
            async with self._lifecycle_lock:
                if self._applies_now() and not await self._serves_current_generation():
                    logger.warning(
                        "HAProxy does not serve config generation %s: reloading", self._generation
                    )
                    await self._reload()
            return []
        async with self._runtime_lock:
            observed = await self.runtime.servers_state()
            desired = list(self._backends.values())
            if self._settings.grpc_port is not None:
                desired += grpc_backends(desired)
            repairs = plan_repairs(desired, observed)
            for repair in repairs:
                try:
                    await apply_repair(self.runtime, repair)
                except HAProxyError as error:
                    logger.warning("HAProxy repair %s failed: %s", repair, error)
        if repairs:
            logger.warning("HAProxy differed from the desired state; repaired: %s", repairs)
        return repairs

    async def _serves_current_generation(self) -> bool:
        info = await self.runtime.info()
        return self._generation is None or info.generation == self._generation
