"""What to change in HAProxy so that its servers match the desired state: a pure function.

The manager applies each change through the runtime API, so that a lost answer, a change that
landed on a worker a reload replaced, or a server that would not go away yet is repaired on
the next pass instead of being left behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from swell._ingress.haproxy_config import BackendEntry, ServerEntry
from swell._ingress.haproxy_runtime import HAProxyRuntime, ObservedServer
from swell._protocol import WAKE_SERVER


class RepairKind(Enum):
    ADD = "add"  # desired, missing in HAProxy
    REMOVE = "remove"  # in HAProxy, not desired
    ENABLE = "enable"  # desired in service, but in maintenance, unchecked or draining
    DRAIN = "drain"  # desired draining, HAProxy still sends it requests
    READDRESS = "readdress"  # desired at another address


@dataclass(frozen=True)
class Repair:
    kind: RepairKind
    backend: str
    name: str
    server: ServerEntry | None = None  # the desired server (not for REMOVE)


def plan_repairs(
    desired: list[BackendEntry], observed: dict[str, dict[str, ObservedServer]]
) -> list[Repair]:
    """The changes that make HAProxy's servers match ``desired``, in a stable order.

    Only backends in ``desired`` are compared: a backend appears or disappears with a reload,
    not through the runtime API. The wake-up backup server is the config's, never touched.
    """
    repairs = []
    for backend in sorted(desired, key=lambda b: b.name):
        have = {n: s for n, s in observed.get(backend.name, {}).items() if n != WAKE_SERVER}
        want = {s.name: s for s in backend.servers}
        for name in sorted(set(have) - set(want)):
            repairs.append(Repair(RepairKind.REMOVE, backend.name, name))
        for name in sorted(want):
            server = want[name]
            current = have.get(name)
            if current is None:
                repairs.append(Repair(RepairKind.ADD, backend.name, name, server))
            elif current.address != server.address:
                repairs.append(Repair(RepairKind.READDRESS, backend.name, name, server))
            elif (
                current.maintenance
                or not current.checks_enabled
                or (current.draining and not server.draining)
            ):
                repairs.append(Repair(RepairKind.ENABLE, backend.name, name, server))
            elif server.draining and not current.draining:
                repairs.append(Repair(RepairKind.DRAIN, backend.name, name, server))
    return repairs


async def apply_repair(runtime: HAProxyRuntime, repair: Repair) -> None:
    """One repair, as one conversation (two for a removal whose server is not yet free)."""
    server = repair.server
    if repair.kind is RepairKind.REMOVE:
        if not await runtime.start_removal(repair.backend, repair.name):
            await runtime.try_delete(repair.backend, repair.name)
        return
    assert server is not None
    if repair.kind is RepairKind.ADD:
        await runtime.add_server(repair.backend, server)
    elif repair.kind is RepairKind.READDRESS:
        host, _, port = server.address.rpartition(":")
        await runtime.set_server_address(repair.backend, server.name, host, int(port))
    else:  # ENABLE or DRAIN: the desired admin state
        await runtime.enable_server(repair.backend, server.name, server.draining)
