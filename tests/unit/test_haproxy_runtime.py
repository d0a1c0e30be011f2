"""HAProxy's runtime API client, driven through an in-memory HAProxy (``fake_haproxy``)."""

from __future__ import annotations

import asyncio

import pytest

from swell._ingress import haproxy_runtime
from swell._ingress.haproxy_config import ServerEntry
from swell._ingress.haproxy_runtime import (
    HAProxyRefused,
    HAProxyRuntime,
    HAProxyUnavailable,
    ObservedServer,
    parse_info,
    parse_servers_state,
)
from tests.unit.fake_haproxy import STATE_HEADER, FakeHAProxy, FakeServer

SERVER = ServerEntry("r1", "127.0.0.1:9001", maxconn=5)
ADD_R1 = (
    "add server app_x/r1 127.0.0.1:9001 maxconn 5 check inter 1000 fall 2 rise 1 "
    "pool-max-conn -1 pool-purge-delay 5s"
)


def runtime(haproxy: FakeHAProxy, generation: int | None = 1) -> HAProxyRuntime:
    return HAProxyRuntime(haproxy, lambda: generation)


def test_add_server_is_one_checked_conversation() -> None:
    haproxy = FakeHAProxy()
    asyncio.run(runtime(haproxy).add_server("app_x", SERVER))
    # One connection: the worker is checked first, then every step's answer.
    assert haproxy.sessions == [
        ["show info", ADD_R1, "enable health app_x/r1", "set server app_x/r1 state ready"]
    ]
    server = haproxy.backends["app_x"]["r1"]
    assert (server.maintenance, server.checks) == (False, True)


def test_add_server_with_check_port_and_draining() -> None:
    haproxy = FakeHAProxy()
    entry = ServerEntry("r2", "127.0.0.1:9002", maxconn=3, draining=True, check_port=9502)
    asyncio.run(runtime(haproxy).add_server("app_x", entry))
    assert haproxy.commands == [
        "add server app_x/r2 127.0.0.1:9002 maxconn 3 check inter 1000 fall 2 rise 1 "
        "port 9502 pool-max-conn -1 pool-purge-delay 5s weight 0",
        "enable health app_x/r2",
        "set server app_x/r2 state drain",
    ]
    assert haproxy.backends["app_x"]["r2"].check_port == 9502


def test_add_server_refused_sends_nothing_more() -> None:
    haproxy = FakeHAProxy(refuse={"add server": "'server' : unknown keyword 'bogus'.\n"})
    with pytest.raises(HAProxyRefused) as caught:
        asyncio.run(runtime(haproxy).add_server("app_x", SERVER))
    message = str(caught.value)
    assert "HAProxy refused to add app_x/r1: 'server' : unknown keyword 'bogus'." in message
    assert haproxy.commands == [ADD_R1]


def test_half_applied_add_is_rolled_back_on_the_same_connection() -> None:
    haproxy = FakeHAProxy(refuse={"enable health": "No such server.\n"})
    with pytest.raises(HAProxyRefused, match="refused 'enable health app_x/r1': No such server"):
        asyncio.run(runtime(haproxy).add_server("app_x", SERVER))
    assert haproxy.sessions == [
        [
            "show info",
            ADD_R1,
            "enable health app_x/r1",
            "set server app_x/r1 state maint",
            "del server app_x/r1",
        ]
    ]
    assert haproxy.backends["app_x"] == {}


def test_add_of_a_server_already_there_brings_it_into_service() -> None:
    # An earlier attempt whose answer was lost left it in maintenance.
    haproxy = FakeHAProxy()
    haproxy.backends["app_x"]["r1"] = FakeServer("127.0.0.1:9001")
    asyncio.run(runtime(haproxy).add_server("app_x", SERVER))
    assert haproxy.commands == [ADD_R1, "enable health app_x/r1", "set server app_x/r1 state ready"]
    server = haproxy.backends["app_x"]["r1"]
    assert (server.maintenance, server.checks) == (False, True)


def test_broken_connection_is_unavailable_not_refused() -> None:
    haproxy = FakeHAProxy(break_on=("enable health",))
    with pytest.raises(HAProxyUnavailable):
        asyncio.run(runtime(haproxy).add_server("app_x", SERVER))


def test_conversation_waits_for_the_worker_of_the_current_generation() -> None:
    # The first connection reaches the worker a reload is replacing (generation 1); the
    # change must go to the new one (generation 2), not be lost with the old.
    haproxy = FakeHAProxy(generation=1)

    def reload_done(fake: FakeHAProxy) -> None:
        fake.generation, fake.pid = 2, 200

    haproxy.after_info = reload_done
    asyncio.run(runtime(haproxy, generation=2).add_server("app_x", SERVER))
    assert haproxy.sessions[0] == ["show info"]
    assert haproxy.sessions[1][0] == "show info" and haproxy.sessions[1][1] == ADD_R1


def test_conversation_gives_up_on_a_stale_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(haproxy_runtime, "_GENERATION_WAIT_S", 0.3)
    haproxy = FakeHAProxy(generation=1)
    rt = runtime(haproxy, generation=2)

    async def attempt() -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(HAProxyUnavailable, match="generation 1, not the current 2"):
            await rt.drain_server("app_x", "r1")
        assert loop.time() - started >= 0.3

    asyncio.run(attempt())
    assert all(session == ["show info"] for session in haproxy.sessions)


def test_any_generation_when_none_is_expected() -> None:
    haproxy = FakeHAProxy(generation=7)
    haproxy.backends["app_x"]["r1"] = FakeServer("127.0.0.1:9001", maintenance=False)
    asyncio.run(runtime(haproxy, generation=None).drain_server("app_x", "r1"))
    assert haproxy.backends["app_x"]["r1"].draining


def test_drain_refused() -> None:
    with pytest.raises(HAProxyRefused, match="No such server"):
        asyncio.run(runtime(FakeHAProxy()).drain_server("app_x", "nope"))


def test_removal_waits_until_the_server_is_removable() -> None:
    haproxy = FakeHAProxy(busy_deletes=2)
    rt = runtime(haproxy)
    asyncio.run(rt.add_server("app_x", SERVER))

    async def remove() -> list[bool]:
        results = [await rt.start_removal("app_x", "r1")]
        while not results[-1]:
            results.append(await rt.try_delete("app_x", "r1"))
        return results

    assert asyncio.run(remove()) == [False, False, True]
    assert haproxy.backends["app_x"] == {}
    assert haproxy.sessions[1][1:] == [
        "set server app_x/r1 state maint",
        "shutdown sessions server app_x/r1",
        "del server app_x/r1",
    ]


def test_removal_uses_wait_srv_removable_where_haproxy_has_it() -> None:
    haproxy = FakeHAProxy(busy_deletes=1)
    rt = HAProxyRuntime(haproxy, lambda: 1, wait_removable=True)
    asyncio.run(rt.add_server("app_x", SERVER))
    assert not asyncio.run(rt.start_removal("app_x", "r1"))
    assert asyncio.run(rt.try_delete("app_x", "r1", wait_ms=1000))
    assert haproxy.sessions[-1][1:] == ["wait 1000 srv-removable app_x/r1", "del server app_x/r1"]


def test_removing_a_server_that_is_gone_succeeds() -> None:
    haproxy = FakeHAProxy()
    assert asyncio.run(runtime(haproxy).start_removal("app_x", "ghost"))
    assert asyncio.run(runtime(haproxy).start_removal("app_gone", "ghost"))
    assert asyncio.run(runtime(haproxy).try_delete("app_x", "ghost"))


def test_delete_refused_for_another_reason() -> None:
    haproxy = FakeHAProxy(refuse={"del server": "This server cannot be removed at runtime.\n"})
    asyncio.run(runtime(haproxy).add_server("app_x", SERVER))
    with pytest.raises(HAProxyRefused, match="cannot be removed at runtime"):
        asyncio.run(runtime(haproxy).start_removal("app_x", "r1"))


# What HAProxy 2.6 and 2.8 answer to `show servers state` (same columns in both).
SERVERS_STATE = (
    "1\n"
    f"{STATE_HEADER}\n"
    "3 app_x 1 s1 127.0.0.1 0 0 1 1 1 8 2 0 6 0 0 0 - 9 - 0 0 - - 0\n"
    "3 app_x 2 r1 127.0.0.1 2 0 1 1 0 1 0 2 6 0 0 0 - 9001 - 0 9002 - - 9002\n"
    "3 app_x 3 old 127.0.0.1 2 8 0 1 0 1 0 2 6 0 0 0 - 9003 - 0 0 - - 0\n"
    "3 app_x 4 new 127.0.0.1 0 1 1 1 0 1 0 2 2 0 0 0 - 9004 - 0 0 - - 0\n"
    "4 app_y 1 swell_wake 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 7001 - 0 0 - - 0\n"
    "\n"
)


def test_parse_servers_state() -> None:
    state = parse_servers_state(SERVERS_STATE)
    assert set(state) == {"app_x", "app_y"}
    assert state["app_x"]["r1"] == ObservedServer(
        "r1", "127.0.0.1:9001", maintenance=False, draining=False, checks_enabled=True,
        check_port=9002,
    )  # fmt: skip
    assert state["app_x"]["old"].draining and not state["app_x"]["old"].maintenance
    assert state["app_x"]["new"].maintenance and not state["app_x"]["new"].checks_enabled
    assert state["app_x"]["s1"].check_port is None


def test_parse_servers_state_empty_and_garbage() -> None:
    assert parse_servers_state("1\n\n") == {}
    assert parse_servers_state("") == {}
    with pytest.raises(HAProxyRefused):
        parse_servers_state("Unknown command.\n")


def test_parse_info() -> None:
    info = parse_info(
        "Name: HAProxy\nVersion: 2.8.25-5cf5d0683\nPid: 1234\nnode: vm\n"
        "description: swell generation 12\n"
    )
    assert (info.pid, info.version, info.generation) == (1234, "2.8.25-5cf5d0683", 12)
    assert parse_info("Pid: 5\n").generation is None
    with pytest.raises(HAProxyUnavailable, match="no Pid line"):
        parse_info("Name: HAProxy\nUnknown command.\n")


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
    "app_x,swell_wake,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,0,1,0,0,10,0,,1,4,4,\n"
    "app_x,BACKEND,2,4,8,10,410,120,1000,2000,0,0,,0,0,0,0,UP,2,2,0,,0,10,0,,1,4,0,\n"
    "app_y,s1,1,1,4,4,5,9,10,20,,0,,0,0,0,0,UP,1,1,0,0,0,10,0,,1,5,1,\n"
    "app_y,BACKEND,1,1,4,4,410,9,10,20,0,0,,0,0,0,0,UP,1,1,0,,0,10,0,,1,5,0,\n"
    "\n"
)


def test_server_sessions_sums_current_and_queued() -> None:
    haproxy = FakeHAProxy(refuse={"show stat": SHOW_STAT})
    rt = runtime(haproxy)
    # Per server: in progress plus queued for it; BACKEND: queued for no server in particular.
    assert asyncio.run(rt.server_sessions("app_x")) == {"r1": 3, "r2": 7, "old": 0, "BACKEND": 2}
    assert asyncio.run(rt.server_sessions("app_y")) == {"s1": 5, "BACKEND": 1}
    assert asyncio.run(rt.server_sessions("app_z")) == {}


def test_server_sessions_blank_counters_are_zero() -> None:
    answer = "# pxname,svname,qcur,qmax,scur,\napp_x,r1,,,,\n"
    rt = runtime(FakeHAProxy(refuse={"show stat": answer}))
    assert asyncio.run(rt.server_sessions("app_x")) == {"r1": 0}


def test_commands_must_be_single_lines() -> None:
    # Names are validated long before; this is the last line of defence.
    from swell._ingress.haproxy_runtime import _UnixSession

    session = _UnixSession(None, None)  # type: ignore[arg-type]
    for bad in ("del server a/b\nshow info", "del server a/b; show info"):
        with pytest.raises(HAProxyRefused, match="one line"):
            asyncio.run(session.command(bad))


def test_draining_forgets_the_servers_model_affinity() -> None:
    """HAProxy keeps sending a stick-table's requests to a draining server: its model entries
    are cleared in the same conversation, by the server's numeric id."""
    haproxy = FakeHAProxy()
    for name in ("r1", "r2"):
        haproxy.backends["app_x"][name] = FakeServer("127.0.0.1:9001", maintenance=False)
    asyncio.run(runtime(haproxy).drain_server("app_x", "r2"))
    assert haproxy.sessions[-1][1:] == [
        "set server app_x/r2 state drain",
        "show servers state app_x",
        "clear table app_x data.server_id eq 2",
    ]
    asyncio.run(runtime(haproxy).enable_server("app_x", "r1", draining=True))
    assert haproxy.sessions[-1][-1] == "clear table app_x data.server_id eq 1"
