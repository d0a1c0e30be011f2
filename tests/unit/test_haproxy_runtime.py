"""HAProxy's runtime API client, driven through a fake transport."""

from __future__ import annotations

import asyncio

import pytest

from swell._ingress.haproxy_config import ServerEntry
from swell._ingress.haproxy_runtime import HAProxyRuntime
from swell.exceptions import HAProxyError


class FakeTransport:
    """Records every command; answers from a table of command prefixes, else with ''."""

    def __init__(self, answers: dict[str, str] | None = None) -> None:
        self.answers = answers or {}
        self.commands: list[str] = []

    async def send(self, command: str) -> str:
        self.commands.append(command)
        for prefix, answer in self.answers.items():
            if command.startswith(prefix):
                return answer
        return ""


SERVER = ServerEntry("r1", "127.0.0.1:9001", maxconn=5)
ADDED = "New server registered.\n\n"


def test_add_server_sends_three_commands() -> None:
    transport = FakeTransport({"add server": ADDED})
    asyncio.run(HAProxyRuntime(transport).add_server("app_x", SERVER))
    assert transport.commands == [
        "add server app_x/r1 127.0.0.1:9001 maxconn 5 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s",
        "enable health app_x/r1",
        "enable server app_x/r1",
    ]


def test_add_draining_server() -> None:
    transport = FakeTransport({"add server": ADDED})
    draining = ServerEntry("r2", "127.0.0.1:9002", maxconn=3, draining=True)
    asyncio.run(HAProxyRuntime(transport).add_server("app_x", draining))
    assert transport.commands[0] == (
        "add server app_x/r2 127.0.0.1:9002 maxconn 3 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s weight 0"
    )


def test_add_server_refused() -> None:
    transport = FakeTransport({"add server": "Already exists a server with the same name.\n"})
    with pytest.raises(HAProxyError) as caught:
        asyncio.run(HAProxyRuntime(transport).add_server("app_x", SERVER))
    message = str(caught.value)
    assert "'add server app_x/r1 127.0.0.1:9001" in message
    assert "Already exists a server with the same name." in message
    # Nothing more is tried after a refusal.
    assert len(transport.commands) == 1


def test_enable_refused() -> None:
    transport = FakeTransport({"add server": ADDED, "enable health": "No such server.\n"})
    with pytest.raises(HAProxyError, match="refused 'enable health app_x/r1': No such server"):
        asyncio.run(HAProxyRuntime(transport).add_server("app_x", SERVER))


def test_drain_server() -> None:
    transport = FakeTransport()
    asyncio.run(HAProxyRuntime(transport).drain_server("app_x", "r1"))
    assert transport.commands == ["set server app_x/r1 state drain"]


def test_remove_server() -> None:
    transport = FakeTransport({"del server": "Server deleted.\n"})
    asyncio.run(HAProxyRuntime(transport).remove_server("app_x", "r1"))
    assert transport.commands == [
        "set server app_x/r1 state maint",
        "shutdown sessions server app_x/r1",
        "del server app_x/r1",
    ]


def test_remove_server_refused() -> None:
    transport = FakeTransport({"del server": "Server still has connections attached to it.\n"})
    with pytest.raises(HAProxyError, match="refused 'del server app_x/r1'"):
        asyncio.run(HAProxyRuntime(transport).remove_server("app_x", "r1"))


# A trimmed but faithful `show stat` answer: HAProxy's real header starts with "# ", the
# column order is HAProxy's, and every row (including the last) ends with a comma.
SHOW_STAT = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,"
    "wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,\n"
    "swell_http,FRONTEND,,,7,9,4096,120,1000,2000,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,\n"
    "swell_no_route,BACKEND,0,0,0,0,410,0,0,0,0,0,,0,0,0,0,UP,0,0,0,,0,10,,,1,3,0,\n"
    "app_x,r1,0,1,3,5,5,60,500,900,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,4,1,\n"
    "app_x,r2,2,4,5,5,5,50,400,800,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,4,2,\n"
    "app_x,old,0,0,0,2,5,10,100,200,,0,,0,0,0,0,DRAIN,0,1,0,0,0,10,0,,1,4,3,\n"
    "app_x,BACKEND,2,4,8,10,410,120,1000,2000,0,0,,0,0,0,0,UP,2,2,0,,0,10,0,,1,4,0,\n"
    "app_y,s1,1,1,4,4,5,9,10,20,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,5,1,\n"
    "app_y,BACKEND,1,1,4,4,410,9,10,20,0,0,,0,0,0,0,UP,1,1,0,,0,10,0,,1,5,0,\n"
    "\n"
)


def test_server_sessions_sums_current_and_queued() -> None:
    transport = FakeTransport({"show stat": SHOW_STAT})
    runtime = HAProxyRuntime(transport)
    # Per server: in progress plus queued for it; BACKEND: queued for no server in particular.
    assert asyncio.run(runtime.server_sessions("app_x")) == {
        "r1": 3,
        "r2": 7,
        "old": 0,
        "BACKEND": 2,
    }
    assert asyncio.run(runtime.server_sessions("app_y")) == {"s1": 5, "BACKEND": 1}
    assert transport.commands == ["show stat", "show stat"]


def test_server_sessions_unknown_backend_or_empty() -> None:
    assert (
        asyncio.run(
            HAProxyRuntime(FakeTransport({"show stat": SHOW_STAT})).server_sessions("app_z")
        )
        == {}
    )
    assert asyncio.run(HAProxyRuntime(FakeTransport()).server_sessions("app_x")) == {}


def test_server_sessions_blank_counters_are_zero() -> None:
    answer = "# pxname,svname,qcur,qmax,scur,\napp_x,r1,,,,\n"
    runtime = HAProxyRuntime(FakeTransport({"show stat": answer}))
    assert asyncio.run(runtime.server_sessions("app_x")) == {"r1": 0}


SHOW_INFO = (
    "Name: HAProxy\n"
    "Version: 2.6.12-1+deb12u4\n"
    "Release_date: 2026/10/17\n"
    "Nbthread: 16\n"
    "Nbproc: 1\n"
    "Process_num: 1\n"
    "Pid: 1234\n"
    "Uptime: 0d 0h01m02s\n"
    "Uptime_sec: 62\n"
)


def test_process_id() -> None:
    transport = FakeTransport({"show info": SHOW_INFO})
    assert asyncio.run(HAProxyRuntime(transport).process_id()) == 1234
    assert transport.commands == ["show info"]


def test_process_id_missing() -> None:
    transport = FakeTransport({"show info": "Name: HAProxy\nUnknown command.\n"})
    with pytest.raises(HAProxyError, match="no Pid line"):
        asyncio.run(HAProxyRuntime(transport).process_id())
