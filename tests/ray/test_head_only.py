"""proxy_location='HeadOnly' on a real cluster: one HAProxy, on the head node, serving apps
whose replicas run on the workers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import swell
from tests.ray.apps import Where
from tests.ray.conftest import RayCluster, get_json, replica_nodes

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def swell_head_only(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    swell.start(
        http_options={"host": "127.0.0.1", "port": ray_cluster.nodes["head"].port},
        admin_port=0,
        address=ray_cluster.cluster.address,
        proxy_location="HeadOnly",
    )
    try:
        yield ray_cluster
    finally:
        swell.shutdown()


def test_head_only_runs_one_proxy(swell_head_only: RayCluster) -> None:
    nodes = swell_head_only.nodes
    assert set(swell.status().proxies) == {nodes["head"].node_id}
    named = {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)}
    assert len([n for n in named if n.startswith("SWELL_PROXY-")]) == 1
    on_b = {"num_cpus": 0.1, "resources": {nodes["b"].resource: 1}}
    swell.run(Where.options(ray_actor_options=on_b).bind(), name="headonly", route_prefix="/")
    (replica,) = replica_nodes("headonly", "Where")
    assert get_json(nodes["head"].url)["replica"] == replica
