"""proxy_location='HeadOnly' on a real cluster: one HAProxy, on the head node, serving apps
whose replicas run on the workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import swell
from tests.certs import TestCA
from tests.ray.apps import Back, Front, Where
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


def test_tls_between_nodes(ray_cluster: RayCluster, tmp_path: Path) -> None:
    """--tls-cert on Ray: the head's HAProxy reaches Front on node a over TLS, Front calls Back
    on node b over the TLS data plane, and routers watch the controller over https."""
    ca = TestCA(tmp_path)
    cert = ca.issue("cluster")
    nodes = ray_cluster.nodes
    swell.start(
        http_options={"host": "127.0.0.1", "port": nodes["head"].port},
        admin_port=0,
        address=ray_cluster.cluster.address,
        proxy_location="HeadOnly",
        tls_cert=str(cert.cert),
        tls_key=str(cert.key),
        tls_ca=str(ca.cert),
    )
    try:
        back = Back.options(ray_actor_options=_on(nodes["b"].resource)).bind()
        front = Front.options(ray_actor_options=_on(nodes["a"].resource)).bind(back)
        swell.run(front, name="tls", route_prefix="/")
        (front_replica,) = replica_nodes("tls", "Front")
        (back_replica,) = replica_nodes("tls", "Back")
        assert get_json(nodes["head"].url) == {"front": front_replica, "back": back_replica}
        # The driver's own handle: data plane over TLS, replica set from the https cluster port.
        handle = swell.get_deployment_handle("Back", "tls")
        assert handle.who.remote().result(timeout_s=60) == back_replica
        replica = swell.status().applications["tls"].deployments["Back"].replicas[0]
        assert replica.address is not None
        with pytest.raises(httpx.HTTPError):  # plain HTTP to the replica is not served
            httpx.get(f"http://{replica.address}/", timeout=10)
    finally:
        swell.shutdown()


def _on(resource: str) -> dict[str, object]:
    return {"num_cpus": 0.1, "resources": {resource: 1}}
