"""A client for HAProxy's runtime API over its unix socket: one command per connection."""

from __future__ import annotations

import asyncio
import csv
import io
from typing import Protocol

from swell._ingress.haproxy_config import ServerEntry, server_arguments
from swell._protocol import BACKEND_QUEUE, WAKE_SERVER
from swell.exceptions import HAProxyError

_COMMAND_TIMEOUT_S = 5.0


class RuntimeTransport(Protocol):
    """Sends one command and returns HAProxy's answer; swapped for a fake in unit tests."""

    async def send(self, command: str) -> str: ...


class UnixSocketTransport:
    """The real transport: HAProxy's admin-level stats socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    async def send(self, command: str) -> str:
        async def exchange() -> str:
            reader, writer = await asyncio.open_unix_connection(self.socket_path)
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                return (await reader.read()).decode()
            finally:
                writer.close()

        try:
            return await asyncio.wait_for(exchange(), _COMMAND_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            raise HAProxyError(
                f"HAProxy's runtime API at {self.socket_path} did not answer {command!r}: {error}"
            ) from error


class HAProxyRuntime:
    """The commands swell uses: add, drain, remove servers; read their sessions."""

    def __init__(self, transport: RuntimeTransport) -> None:
        self._transport = transport

    async def _checked(self, command: str, ok_markers: tuple[str, ...] = ()) -> str:
        answer = await self._transport.send(command)
        text = answer.strip()
        if text and not any(marker in text for marker in ok_markers):
            raise HAProxyError(f"HAProxy refused {command!r}: {text}")
        return text

    async def add_server(self, backend: str, server: ServerEntry) -> None:
        """Add a server and put it in service with health checks on."""
        await self._checked(
            f"add server {backend}/{server.name} {server_arguments(server)}",
            ("New server registered",),
        )
        await self._checked(f"enable health {backend}/{server.name}")
        await self._checked(f"enable server {backend}/{server.name}")

    async def drain_server(self, backend: str, name: str) -> None:
        """No new requests go to it; the ones it has carry on."""
        await self._checked(f"set server {backend}/{name} state drain")

    async def remove_server(self, backend: str, name: str) -> None:
        """Take it out of the backend for good (it must have no requests left, or be dead)."""
        await self._checked(f"set server {backend}/{name} state maint")
        await self._checked(f"shutdown sessions server {backend}/{name}")
        await self._checked(f"del server {backend}/{name}", ("Server deleted",))

    async def set_server_address(self, backend: str, name: str, host: str, port: int) -> None:
        await self._checked(
            f"set server {backend}/{name} addr {host} port {port}",
            ("changed", "no need to change"),
        )

    async def server_sessions(self, backend: str) -> dict[str, int]:
        """Current sessions (requests in progress or queued) per server of a backend, and
        under ``BACKEND`` the requests queued for the backend as a whole."""
        answer = await self._transport.send("show stat")
        rows = csv.DictReader(io.StringIO(answer.lstrip("# ")))
        sessions: dict[str, int] = {}
        for row in rows:
            if row.get("pxname") != backend or row.get("svname") in ("FRONTEND", WAKE_SERVER):
                continue
            if row.get("svname") == BACKEND_QUEUE:
                # Requests queued in the backend, not yet given to any server.
                sessions[BACKEND_QUEUE] = int(row.get("qcur") or 0)
                continue
            sessions[row["svname"]] = int(row.get("scur") or 0) + int(row.get("qcur") or 0)
        return sessions

    async def process_id(self) -> int:
        """The pid of the worker answering: it changes when a reload has taken effect."""
        answer = await self._transport.send("show info")
        for line in answer.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Pid":
                return int(value)
        raise HAProxyError(f"HAProxy's 'show info' had no Pid line: {answer[:200]!r}")
