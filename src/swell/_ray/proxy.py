"""One node's ingress: swell's HAProxy manager inside an actor pinned to that node.

The class is named ``HAProxyManager`` so ``ray list actors`` shows one per node. The
controller's fleet (``swell._ray.ingress``) drives every such actor with the same calls the
local controller makes on its one HAProxy manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from swell._ingress import haproxy_exporter
from swell._ingress.haproxy_config import BackendEntry
from swell._ingress.haproxy_manager import HAProxyManager as _LocalManager
from swell._procs import pid_alive
from swell._ray.cluster import this_node
from swell.config import HTTPOptions

_DIR_PREFIX = "swell-proxy-"
_DIR_PATTERN = re.compile(rf"^{_DIR_PREFIX}(\d+)-")


def _sweep_stale_dirs() -> None:
    """Remove this user's proxy directories whose actor process is gone: a proxy killed with
    its node (or by Ray) never ran ``stop()``, which removes its own."""
    root = Path(tempfile.gettempdir())
    for entry in root.iterdir():
        match = _DIR_PATTERN.match(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        with contextlib.suppress(OSError):
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.getuid():
                shutil.rmtree(entry, ignore_errors=True)


class HAProxyManager:
    """The HAProxy of the node this actor runs on."""

    def __init__(
        self, options: HTTPOptions, wake_address: str, replica_ca: str | None = None
    ) -> None:
        self._options = options
        self._wake_address = wake_address
        self._node_ip, self._node_id = this_node()
        _sweep_stale_dirs()
        self._dir = Path(tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-"))  # 0700
        self._manager = _LocalManager(options, self._dir, wake_address, replica_ca=replica_ca)
        self._stopped = asyncio.Event()

    async def start(self, backends: dict[str, BackendEntry]) -> dict[str, Any]:
        """Start HAProxy already serving ``backends`` (the fleet's whole state, servers too)."""
        self._manager.restore_backends(backends)
        await self._manager.start()
        return self.describe()

    def describe(self) -> dict[str, Any]:
        """The manager's real state (status, pid, restarts, last error, ...) and the node."""
        return {
            **self._manager.describe(),
            "node_id": self._node_id,
            "node_ip": self._node_ip,
            "actor_pid": os.getpid(),
        }

    async def set_route(
        self, app_name: str, route_prefix: str, max_queued_requests: int = -1
    ) -> None:
        await self._manager.set_route(app_name, route_prefix, max_queued_requests)

    async def remove_route(self, app_name: str) -> None:
        await self._manager.remove_route(app_name)

    async def add_server(
        self, app_name: str, server_name: str, address: str, maxconn: int, check_port: int | None
    ) -> None:
        await self._manager.add_server(app_name, server_name, address, maxconn, check_port)

    async def drain_server(self, app_name: str, server_name: str) -> None:
        await self._manager.drain_server(app_name, server_name)

    async def remove_server(self, app_name: str, server_name: str) -> None:
        await self._manager.remove_server(app_name, server_name)

    async def sessions(self, app_name: str) -> dict[str, int]:
        return await self._manager.sessions(app_name)

    async def haproxy_metrics(self, timeout_s: float) -> str | None:
        """This node's HAProxy exporter text (its socket is only reachable on this node)."""
        socket_path = self._manager.metrics_socket
        if socket_path is None:
            return None
        return await haproxy_exporter.scrape(socket_path, timeout_s)

    async def wait_stopped(self) -> None:
        """Pending for the proxy's whole life: the fleet sees the actor die when this fails.
        (An HAProxy that exits is restarted, with the whole state, by the manager itself.)"""
        await self._stopped.wait()

    async def stop(self) -> None:
        try:
            await self._manager.stop()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._stopped.set()
