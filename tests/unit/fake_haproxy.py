"""An in-memory HAProxy runtime API for unit tests: servers per backend, a config generation,
and faults a test can script (refused commands, busy deletes, a worker swap).

It answers like HAProxy 2.6/2.8 do in interactive mode (texts checked against both).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from swell._ingress.haproxy_runtime import HAProxyUnavailable, RuntimeSession

STATE_HEADER = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port"
)


@dataclass
class FakeServer:
    address: str
    maintenance: bool = True  # dynamic servers start in maintenance, as in HAProxy
    checks: bool = False
    draining: bool = False
    check_port: int = 0


@dataclass
class FakeHAProxy:
    generation: int = 1
    pid: int = 100
    backends: dict[str, dict[str, FakeServer]] = field(default_factory=lambda: {"app_x": {}})
    # Answers replacing the normal one for commands starting with a prefix.
    refuse: dict[str, str] = field(default_factory=dict)
    # How many more ``del server`` attempts find connections still attached.
    busy_deletes: int = 0
    # Commands (by prefix) on which the connection breaks.
    break_on: tuple[str, ...] = ()
    # Called after each ``show info``: lets a test swap the worker between conversations.
    after_info: Callable[[FakeHAProxy], None] | None = None
    sessions: list[list[str]] = field(default_factory=list)

    @property
    def commands(self) -> list[str]:
        return [c for session in self.sessions for c in session if c != "show info"]

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[RuntimeSession]:
        log: list[str] = []
        self.sessions.append(log)
        yield _Session(self, log)

    def answer(self, command: str) -> str:
        for prefix, answer in self.refuse.items():
            if command.startswith(prefix):
                return answer
        words = command.split()
        if command == "show info":
            info = (
                f"Name: HAProxy\nVersion: 2.6.12\nPid: {self.pid}\n"
                f"description: swell generation {self.generation}\n"
            )
            if self.after_info is not None:
                self.after_info(self)
            return info
        if command == "show servers state":
            return self._servers_state()
        if command.startswith("show servers state "):
            state = self._servers_state().splitlines()
            rows = [line for line in state[2:] if line.split()[1:2] == [words[3]]]
            return "\n".join([*state[:2], *rows]) + "\n\n"
        if words[:2] == ["clear", "table"]:
            return "" if words[2] in self.backends else "No such table\n"
        if command.startswith("wait "):
            return ""
        backend, _, name = (words[2] if words[0] in ("add", "del") else words[-1]).partition("/")
        if words[:2] == ["shutdown", "sessions"]:
            return ""
        if words[0] == "set":
            backend, _, name = words[2].partition("/")
        servers = self.backends.get(backend)
        if servers is None:
            return "No such backend.\n"
        if words[:2] == ["add", "server"]:
            if name in servers:
                return "Already exists a server with the same name in backend.\n"
            port = words[words.index("port") + 1] if "port" in words else "0"
            servers[name] = FakeServer(words[3], draining="weight" in words, check_port=int(port))
            return "New server registered.\n"
        server = servers.get(name)
        if server is None:
            return "No such server.\n"
        if words[:2] == ["enable", "health"]:
            server.checks = True
            return ""
        if words[:2] == ["del", "server"]:
            if not server.maintenance:
                return "Only servers in maintenance mode can be deleted.\n"
            if self.busy_deletes > 0:
                self.busy_deletes -= 1
                return "Server still has connections attached to it, cannot remove it.\n"
            del servers[name]
            return "Server deleted.\n"
        if words[0] == "set" and words[3] == "state":
            server.maintenance = words[4] == "maint"
            server.draining = words[4] == "drain"
            return ""
        if words[0] == "set" and words[3] == "addr":
            server.address = f"{words[4]}:{words[6]}"
            return f"IP changed from 'x' to '{words[4]}', port changed from 'y' to '{words[6]}'\n"
        return f"Unknown command: {command!r}\n"

    def _servers_state(self) -> str:
        lines = ["1", STATE_HEADER]
        for be_id, (backend, servers) in enumerate(sorted(self.backends.items()), start=3):
            for srv_id, (name, server) in enumerate(sorted(servers.items()), start=1):
                host, _, port = server.address.rpartition(":")
                admin = 0x01 if server.maintenance else 0x08 if server.draining else 0
                check_state = 0x06 if server.checks else 0x02
                lines.append(
                    f"{be_id} {backend} {srv_id} {name} {host} 2 {admin} 1 1 5 6 3 4 "
                    f"{check_state} 0 0 0 - {port} - 0 {server.check_port} - - 0"
                )
        return "\n".join(lines) + "\n\n"


class _Session:
    def __init__(self, haproxy: FakeHAProxy, log: list[str]) -> None:
        self._haproxy = haproxy
        self._log = log

    async def command(self, text: str) -> str:
        self._log.append(text)
        if text.startswith(self._haproxy.break_on) and self._haproxy.break_on:
            raise HAProxyUnavailable(f"connection reset during {text!r}")
        return self._haproxy.answer(text)
