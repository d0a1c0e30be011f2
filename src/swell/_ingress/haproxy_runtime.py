"""A client for HAProxy's runtime API: each change is one checked conversation on one connection.

A conversation runs in the CLI's interactive mode (``prompt``), so every command's answer is
read and checked before the next command goes out, and a half-applied change can be undone on
the same connection. It starts with ``show info``: if the worker answering is not the one
that loaded the current config (its generation), the conversation is retried until it is, so
no change lands on a worker that a reload is replacing.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol

from swell._ingress import model_affinity
from swell._ingress.haproxy_config import ServerEntry, parse_generation, server_arguments
from swell._protocol import BACKEND_QUEUE, WAKE_SERVER
from swell.exceptions import HAProxyError

_COMMAND_TIMEOUT_S = 5.0
# Every answer ends with a newline, then the prompt.
_PROMPT = b"\n> "
_GENERATION_WAIT_S = 5.0
_POLL_S = 0.05

# srv_admin_state and srv_check_state bits of ``show servers state`` (HAProxy's server-t.h
# and check-t.h; unchanged from 2.6 to 3.x).
_ADMIN_MAINT = 0x01 | 0x02 | 0x04 | 0x20
_ADMIN_DRAIN = 0x08 | 0x10
_CHECK_ENABLED = 0x04


class HAProxyUnavailable(HAProxyError):
    """The runtime API did not answer (HAProxy stopped, restarting, or reloading): retry later."""


class HAProxyRefused(HAProxyError):
    """HAProxy answered a command with an error: retrying the same command will not help."""


class RuntimeSession(Protocol):
    """One connection in interactive mode: a command in, its whole answer out."""

    async def command(self, text: str) -> str: ...


class RuntimeTransport(Protocol):
    """Opens conversations with HAProxy; swapped for a fake in unit tests."""

    def session(self) -> AbstractAsyncContextManager[RuntimeSession]: ...


class _UnixSession:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read_answer(self) -> str:
        """Everything up to the next prompt."""
        data = b""
        while not data.endswith(_PROMPT):
            chunk = await self._reader.read(65536)
            if not chunk:
                raise ConnectionResetError("HAProxy closed the connection")
            data += chunk
        return data[: -len(_PROMPT) + 1].decode(errors="replace")

    async def command(self, text: str) -> str:
        if "\n" in text or ";" in text:
            raise HAProxyRefused(f"not sending {text!r}: a command must be one line, no ';'")
        try:
            self._writer.write(text.encode() + b"\n")
            return await asyncio.wait_for(self.read_answer(), _COMMAND_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            raise HAProxyUnavailable(
                f"HAProxy's runtime API did not answer {text!r}: {error!r}"
            ) from error


class UnixSocketTransport:
    """The real transport: HAProxy's admin-level stats socket."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[RuntimeSession]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(self.socket_path), _COMMAND_TIMEOUT_S
            )
        except (OSError, TimeoutError) as error:
            raise HAProxyUnavailable(
                f"HAProxy's runtime API at {self.socket_path} is not reachable: {error!r}"
            ) from error
        session = _UnixSession(reader, writer)
        try:
            writer.write(b"prompt\n")
            try:
                await asyncio.wait_for(session.read_answer(), _COMMAND_TIMEOUT_S)
            except (OSError, TimeoutError) as error:
                raise HAProxyUnavailable(
                    f"HAProxy's runtime API at {self.socket_path} did not answer: {error!r}"
                ) from error
            yield session
        finally:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), _COMMAND_TIMEOUT_S)


@dataclass(frozen=True)
class WorkerInfo:
    """What ``show info`` says about the worker answering."""

    pid: int
    version: str
    generation: int | None


@dataclass(frozen=True)
class ObservedServer:
    """One server as HAProxy has it (``show servers state``)."""

    name: str
    address: str
    maintenance: bool
    draining: bool
    checks_enabled: bool
    check_port: int | None


def parse_info(answer: str) -> WorkerInfo:
    fields = {}
    for line in answer.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    if "Pid" not in fields:
        raise HAProxyUnavailable(f"HAProxy's 'show info' had no Pid line: {answer[:200]!r}")
    return WorkerInfo(
        int(fields["Pid"]),
        fields.get("Version", ""),
        parse_generation(fields.get("description", "")),
    )


def parse_servers_state(answer: str) -> dict[str, dict[str, ObservedServer]]:
    """``show servers state``: backend name -> server name -> what HAProxy has."""
    lines = answer.splitlines()
    header = next((line for line in lines if line.startswith("# be_id")), None)
    if header is None:
        if answer.strip() and not answer.strip().isdigit():
            raise HAProxyRefused(f"unexpected 'show servers state' answer: {answer[:200]!r}")
        return {}
    columns = header[2:].split()
    result: dict[str, dict[str, ObservedServer]] = {}
    for line in lines:
        values = line.split()
        if line.startswith("#") or len(values) < len(columns):
            continue
        row = dict(zip(columns, values, strict=False))
        admin = int(row.get("srv_admin_state", "0"))
        check_state = int(row.get("srv_check_state", "0"))
        check_port = int(row.get("srv_check_port", "0") or 0)
        result.setdefault(row["be_name"], {})[row["srv_name"]] = ObservedServer(
            name=row["srv_name"],
            address=f"{row['srv_addr']}:{row['srv_port']}",
            maintenance=bool(admin & _ADMIN_MAINT),
            draining=bool(admin & _ADMIN_DRAIN) or row.get("srv_uweight") == "0",
            checks_enabled=bool(check_state & _CHECK_ENABLED),
            check_port=check_port or None,
        )
    return result


async def _forget_models(session: RuntimeSession, target: str) -> None:
    """Drop the model-affinity entries of a draining server (see ``model_affinity.py``).

    Best effort: without them its models' next requests simply go where leastconn sends them.
    """
    backend, _, name = target.partition("/")
    server = model_affinity.server_id(await session.command(f"show servers state {backend}"), name)
    if server is not None:
        await session.command(model_affinity.forget_command(backend, server))


def _ok(answer: str, *markers: str) -> bool:
    """An answer is a success when empty or when it contains one of the success markers."""
    text = answer.strip()
    return not text or any(marker in text for marker in markers)


class HAProxyRuntime:
    """The commands swell uses: add, drain, remove servers; read their state and sessions.

    ``expected_generation`` returns the generation of the config the serving worker must have
    loaded (None: accept any worker, e.g. an adopted HAProxy that predates generations).
    """

    def __init__(
        self,
        transport: RuntimeTransport,
        expected_generation: Callable[[], int | None] = lambda: None,
        wait_removable: bool = False,
    ) -> None:
        self._transport = transport
        self._expected_generation = expected_generation
        # HAProxy 3.0+ has ``wait <ms> srv-removable``; older ones are polled with del server.
        self.wait_removable = wait_removable

    @contextlib.asynccontextmanager
    async def conversation(self) -> AsyncIterator[RuntimeSession]:
        """A session with the worker that loaded the current config (retried until then)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GENERATION_WAIT_S
        while True:
            async with self._transport.session() as session:
                info = parse_info(await session.command("show info"))
                expected = self._expected_generation()
                if expected is None or info.generation == expected:
                    yield session
                    return
            if loop.time() > deadline:
                raise HAProxyUnavailable(
                    f"HAProxy's worker {info.pid} runs config generation {info.generation}, "
                    f"not the current {expected}, after {_GENERATION_WAIT_S}s"
                )
            await asyncio.sleep(_POLL_S)

    async def info(self) -> WorkerInfo:
        async with self._transport.session() as session:
            return parse_info(await session.command("show info"))

    async def add_server(self, backend: str, server: ServerEntry) -> None:
        """Add a server, health checks on, in service: all of it, or (on a refusal) none of it.

        A server of that name already there (an earlier attempt whose answer was lost, or one
        a reload loaded from the file) is brought to the wanted state instead.
        """
        target = f"{backend}/{server.name}"
        async with self.conversation() as session:
            answer = await session.command(f"add server {target} {server_arguments(server)}")
            if "Already exists" in answer:
                await self._bring_to_state(session, target, server.draining)
                return
            if not _ok(answer, "New server registered"):
                raise HAProxyRefused(f"HAProxy refused to add {target}: {answer.strip()}")
            try:
                await self._bring_to_state(session, target, server.draining)
            except HAProxyRefused:
                # Undo on the same connection: a server nobody tracks must not stay behind.
                with contextlib.suppress(HAProxyError):
                    await session.command(f"set server {target} state maint")
                    await session.command(f"del server {target}")
                raise

    async def _bring_to_state(self, session: RuntimeSession, target: str, draining: bool) -> None:
        for command in (
            f"enable health {target}",
            f"set server {target} state {'drain' if draining else 'ready'}",
        ):
            answer = await session.command(command)
            if not _ok(answer):
                raise HAProxyRefused(f"HAProxy refused {command!r}: {answer.strip()}")

    async def drain_server(self, backend: str, name: str) -> None:
        """No new requests go to it; the ones it has carry on."""
        command = f"set server {backend}/{name} state drain"
        async with self.conversation() as session:
            answer = await session.command(command)
            if _ok(answer):
                await _forget_models(session, f"{backend}/{name}")
        if not _ok(answer):
            raise HAProxyRefused(f"HAProxy refused {command!r}: {answer.strip()}")

    async def start_removal(self, backend: str, name: str) -> bool:
        """Maintenance, sessions shut, then one delete attempt. True once the server is gone."""
        target = f"{backend}/{name}"
        async with self.conversation() as session:
            answer = await session.command(f"set server {target} state maint")
            if "No such server" in answer or "No such backend" in answer:
                return True
            if not _ok(answer):
                raise HAProxyRefused(f"HAProxy refused to put {target} in maintenance: {answer}")
            await session.command(f"shutdown sessions server {target}")
            return await self._delete(session, target)

    async def try_delete(self, backend: str, name: str, wait_ms: int = 0) -> bool:
        """One more delete attempt (after waiting for removability where HAProxy can)."""
        target = f"{backend}/{name}"
        async with self.conversation() as session:
            if self.wait_removable and wait_ms > 0:
                await session.command(f"wait {wait_ms} srv-removable {target}")
            return await self._delete(session, target)

    @staticmethod
    async def _delete(session: RuntimeSession, target: str) -> bool:
        answer = await session.command(f"del server {target}")
        if any(gone in answer for gone in ("Server deleted", "No such server", "No such backend")):
            return True
        if "still has connections" in answer or "maintenance mode" in answer:
            return False  # idle pooled or finishing connections: removable soon
        raise HAProxyRefused(f"HAProxy refused 'del server {target}': {answer.strip()}")

    async def ready_server(self, backend: str, name: str) -> None:
        """Out of maintenance (a server without health checks: up at once)."""
        command = f"set server {backend}/{name} state ready"
        async with self.conversation() as session:
            answer = await session.command(command)
        if not _ok(answer):
            raise HAProxyRefused(f"HAProxy refused {command!r}: {answer.strip()}")

    async def enable_server(self, backend: str, name: str, draining: bool) -> None:
        async with self.conversation() as session:
            await self._bring_to_state(session, f"{backend}/{name}", draining)
            if draining:
                await _forget_models(session, f"{backend}/{name}")

    async def set_server_address(self, backend: str, name: str, host: str, port: int) -> None:
        command = f"set server {backend}/{name} addr {host} port {port}"
        async with self.conversation() as session:
            answer = await session.command(command)
        if not _ok(answer, "changed", "no need to change"):
            raise HAProxyRefused(f"HAProxy refused {command!r}: {answer.strip()}")

    async def servers_state(self) -> dict[str, dict[str, ObservedServer]]:
        async with self.conversation() as session:
            return parse_servers_state(await session.command("show servers state"))

    async def server_sessions(self, backend: str) -> dict[str, int]:
        """Current sessions (requests in progress or queued) per server of a backend, and
        under ``BACKEND`` the requests queued for the backend as a whole."""
        async with self.conversation() as session:
            answer = await session.command("show stat")
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
