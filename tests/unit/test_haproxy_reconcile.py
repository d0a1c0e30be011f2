"""The reconcile pass: what differs between HAProxy and the desired state, and its repair."""

from __future__ import annotations

import asyncio

from swell._ingress.haproxy_config import BackendEntry, ServerEntry
from swell._ingress.haproxy_reconcile import Repair, RepairKind, apply_repair, plan_repairs
from swell._ingress.haproxy_runtime import HAProxyRuntime, ObservedServer
from swell._protocol import WAKE_SERVER
from tests.unit.fake_haproxy import FakeHAProxy, FakeServer


def observed(name: str, port: int, **state: bool) -> ObservedServer:
    flags = {"maintenance": False, "draining": False, "checks_enabled": True, **state}
    return ObservedServer(name, f"127.0.0.1:{port}", check_port=None, **flags)


def entry(name: str, port: int, draining: bool = False) -> ServerEntry:
    return ServerEntry(name, f"127.0.0.1:{port}", 5, draining)


def test_nothing_to_do_when_they_agree() -> None:
    desired = [BackendEntry("x", "/", (entry("a", 1), entry("b", 2, draining=True)))]
    have = {
        "app_x": {
            "a": observed("a", 1),
            "b": observed("b", 2, draining=True),
            WAKE_SERVER: observed(WAKE_SERVER, 7),
        }
    }
    assert plan_repairs(desired, have) == []


def test_every_kind_of_difference() -> None:
    a, b, c, d, e = entry("a", 1), entry("b", 2, True), entry("c", 3), entry("d", 4), entry("e", 5)
    f = entry("f", 6)
    desired = [BackendEntry("x", "/", (a, b, c, d, e, f)), BackendEntry("y", "/y")]
    have = {
        "app_x": {
            "stale": observed("stale", 9),  # a replica removed while HAProxy did not answer
            "b": observed("b", 2),  # drain never arrived
            "c": observed("c", 3, maintenance=True),  # add answered, enable lost
            "d": observed("d", 44),  # moved
            "e": observed("e", 5, checks_enabled=False),
            "f": observed("f", 6, draining=True),  # drained, but wanted in service
        },
        "app_gone": {"z": observed("z", 8)},  # its route goes with a reload, not from here
    }
    assert plan_repairs(desired, have) == [
        Repair(RepairKind.REMOVE, "app_x", "stale"),
        Repair(RepairKind.ADD, "app_x", "a", a),
        Repair(RepairKind.DRAIN, "app_x", "b", b),
        Repair(RepairKind.ENABLE, "app_x", "c", c),
        Repair(RepairKind.READDRESS, "app_x", "d", d),
        Repair(RepairKind.ENABLE, "app_x", "e", e),
        Repair(RepairKind.ENABLE, "app_x", "f", f),
    ]


def test_repairs_converge_on_an_haproxy() -> None:
    haproxy = FakeHAProxy(busy_deletes=1)
    servers = haproxy.backends["app_x"]
    servers["stale"] = FakeServer("127.0.0.1:9", maintenance=False, checks=True)
    servers["half"] = FakeServer("127.0.0.1:3")  # added, never enabled
    servers["moved"] = FakeServer("127.0.0.1:40", maintenance=False, checks=True)
    desired = [
        BackendEntry(
            "x", "/", (entry("new", 1), entry("half", 3), entry("moved", 4), entry("old", 5, True))
        )
    ]
    servers["old"] = FakeServer("127.0.0.1:5", maintenance=False, checks=True)
    runtime = HAProxyRuntime(haproxy, lambda: 1)

    async def passes() -> list[int]:
        counts = []
        for _ in range(3):
            repairs = plan_repairs(desired, await runtime.servers_state())
            counts.append(len(repairs))
            for repair in repairs:
                await apply_repair(runtime, repair)
        return counts

    # One pass repairs all five (the stale server's first delete finds a connection left and
    # is tried again); later passes find nothing.
    assert asyncio.run(passes()) == [5, 0, 0]
    assert set(servers) == {"new", "half", "moved", "old"}
    assert servers["moved"].address == "127.0.0.1:4"
    assert not servers["half"].maintenance and servers["half"].checks
    assert servers["old"].draining
