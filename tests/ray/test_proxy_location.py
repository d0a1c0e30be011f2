"""proxy_location picks the nodes that get an HAProxy (no cluster needed: the node list is
faked)."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ray")

from swell._ray import ingress
from swell._ray.cluster import NodeInfo
from swell.config import HTTPOptions, ProxyLocation

NODES = [
    NodeInfo("head-id", "10.0.0.1", True, None),
    NodeInfo("worker-id", "10.0.0.2", False, 8001),
]


@pytest.mark.parametrize(
    ("location", "expected"),
    [("EveryNode", {"head-id", "worker-id"}), ("HeadOnly", {"head-id"}), ("Disabled", set())],
)
def test_proxy_location_selects_nodes(
    monkeypatch: pytest.MonkeyPatch, location: ProxyLocation, expected: set[str]
) -> None:
    monkeypatch.setattr(ingress, "alive_nodes", lambda: list(NODES))
    fleet = ingress.ProxyFleet(HTTPOptions(port=8000), "10.0.0.1:9999", location)
    wanted = asyncio.run(fleet._wanted_nodes())
    assert {node.node_id for node in wanted} == expected


def test_a_node_label_overrides_the_http_port() -> None:
    fleet = ingress.ProxyFleet(HTTPOptions(port=8000), "10.0.0.1:9999")
    assert [fleet._port_for(node) for node in NODES] == [8000, 8001]
