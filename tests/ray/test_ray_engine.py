"""The Ray engine on a real three-node Ray cluster: placement, proxies, handles across nodes."""

from __future__ import annotations

import os
import signal

import httpx
import pytest

import swell
from swell import api
from swell._controller.admin_api import view_token
from swell._ray.ingress import proxy_actor_name
from tests.integration.conftest import replica_stats
from tests.metrics_text import parse, total
from tests.ray.apps import Back, Front, Slow, Where
from tests.ray.conftest import RayCluster, get_json, replica_nodes, wait_until

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(180)


def _on(node_resource: str) -> dict[str, object]:
    return {"num_cpus": 0.1, "resources": {node_resource: 1}}


def test_one_haproxy_actor_per_node(swell_on_ray: RayCluster) -> None:
    named = {
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == "swell"
    }
    node_ids = {node.node_id for node in swell_on_ray.nodes.values()}
    assert {n for n in named if n.startswith("SWELL_PROXY-")} == {
        proxy_actor_name(node_id) for node_id in node_ids
    }
    proxies = swell.status().proxies
    assert set(proxies) == node_ids
    for node_id, proxy in proxies.items():
        assert proxy["address"] == f"127.0.0.1:{swell_on_ray.by_id(node_id).port}"
        assert proxy["status"] == "HEALTHY"


def test_replicas_are_placed_by_their_resources(swell_on_ray: RayCluster) -> None:
    nodes = swell_on_ray.nodes
    swell.run(
        Where.options(num_replicas=2, ray_actor_options=_on(nodes["a"].resource)).bind(),
        name="placed_a",
        route_prefix="/a",
    )
    swell.run(
        Where.options(num_replicas=1, ray_actor_options=_on(nodes["b"].resource)).bind(),
        name="placed_b",
        route_prefix="/b",
    )
    try:
        assert set(replica_nodes("placed_a", "Where").values()) == {nodes["a"].node_id}
        assert set(replica_nodes("placed_b", "Where").values()) == {nodes["b"].node_id}
        # Every node's HAProxy serves every app, wherever its replicas run.
        for node in nodes.values():
            assert get_json(node.url, "/a")["replica"] in replica_nodes("placed_a", "Where")
            assert get_json(node.url, "/b")["replica"] in replica_nodes("placed_b", "Where")
    finally:
        swell.delete("placed_a")
        swell.delete("placed_b")


def test_handle_call_crosses_nodes(swell_on_ray: RayCluster) -> None:
    nodes = swell_on_ray.nodes
    back = Back.options(ray_actor_options=_on(nodes["b"].resource)).bind()
    front = Front.options(ray_actor_options=_on(nodes["a"].resource)).bind(back)
    handle = swell.run(front, name="compose", route_prefix="/compose")
    try:
        fronts = replica_nodes("compose", "Front")
        backs = replica_nodes("compose", "Back")
        assert set(fronts.values()) == {nodes["a"].node_id}
        assert set(backs.values()) == {nodes["b"].node_id}
        # Through the head node's HAProxy: head -> a (HTTP) -> b (swell's data plane).
        answer = get_json(nodes["head"].url, "/compose")
        assert answer == {"front": next(iter(fronts)), "back": next(iter(backs))}
        # And from this process (the driver) straight to the replica on node b.
        back_handle = swell.get_deployment_handle("Back", "compose")
        assert back_handle.who.remote().result(timeout_s=30) in backs
        assert handle is not None
    finally:
        swell.delete("compose")


def test_replica_actor_is_gone_after_delete(swell_on_ray: RayCluster) -> None:
    swell.run(Where.options(name="Gone").bind(), name="gone", route_prefix="/gone")
    replica_id = next(iter(replica_nodes("gone", "Gone")))
    actor = f"SWELL_REPLICA-gone-{replica_id}"

    def named() -> set[str]:
        return {e["name"] for e in ray.util.list_named_actors(all_namespaces=True)}

    assert actor in named()
    swell.delete("gone")
    wait_until(lambda: actor not in named(), 30, f"actor {actor} to be gone")


def test_killed_replica_actor_is_replaced(swell_on_ray: RayCluster) -> None:
    swell.run(Where.options(name="Mortal").bind(), name="mortal", route_prefix="/mortal")
    try:
        (old,) = replica_nodes("mortal", "Mortal")
        ray.kill(ray.get_actor(f"SWELL_REPLICA-mortal-{old}", namespace="swell"))

        def replaced() -> str | None:
            running = replica_nodes("mortal", "Mortal")
            return next((r for r in running if r != old), None)

        new = wait_until(replaced, 60, "a replacement replica")
        url = swell_on_ray.nodes["a"].url
        wait_until(lambda: get_json(url, "/mortal")["replica"] == new, 30, "the new replica")
    finally:
        swell.delete("mortal")


def test_a_node_whose_haproxy_dies_serves_again(swell_on_ray: RayCluster) -> None:
    node = swell_on_ray.nodes["b"]
    swell.run(Where.options(name="Steady").bind(), name="steady", route_prefix="/steady")
    try:
        old_pid = swell.status().proxies[node.node_id]["pid"]
        os.kill(old_pid, signal.SIGKILL)

        def new_proxy_serves() -> bool:
            proxy = swell.status().proxies.get(node.node_id)
            if proxy is None or proxy["pid"] == old_pid:
                return False
            try:
                return httpx.get(node.url + "/steady", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(new_proxy_serves, 60, "node b's HAProxy, restarted, serving the app")
    finally:
        swell.delete("steady")


def test_stopping_a_replica_actor_lets_in_flight_calls_finish(swell_on_ray: RayCluster) -> None:
    handle = swell.run(Slow.bind(), name="slow", route_prefix=None)
    (replica,) = swell.status().applications["slow"].deployments["Slow"].replicas
    assert replica.control_address is not None
    control = replica.control_address
    response = handle.wait.remote(3.0)
    wait_until(lambda: replica_stats(control)["load"] >= 1, 10, "the call to reach the replica")
    swell.delete("slow")  # stops the actor: SIGTERM to the replica inside it, which drains
    assert response.result(timeout_s=30) == replica.replica_id


def test_actor_options_ray_refuses_fail_the_deploy_with_the_options(
    swell_on_ray: RayCluster,
) -> None:
    bad = Where.options(name="Bad", ray_actor_options={"num_cpus": -1})
    with pytest.raises(swell.DeploymentFailedError, match="ray_actor_options"):
        swell.run(bad.bind(), name="bad", route_prefix="/bad")
    swell.delete("bad")


def test_metrics_cover_every_nodes_haproxy_and_the_replicas(swell_on_ray: RayCluster) -> None:
    nodes = swell_on_ray.nodes
    swell.run(
        Where.options(ray_actor_options=_on(nodes["a"].resource)).bind(),
        name="metered",
        route_prefix="/metered",
    )
    try:
        for node in nodes.values():
            for _ in range(3):
                get_json(node.url, "/metered")
        instance = api._instance
        assert instance is not None
        admin = f"http://127.0.0.1:{swell.status().raw['admin_port']}"
        token = view_token(instance.admin_token)
        response = httpx.get(
            f"{admin}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=30
        )
        assert response.status_code == 200
        samples = parse(response.text)
        # The replica on node a counted every request, whichever node's HAProxy took it.
        requests = "ray_serve_num_http_requests_total"
        assert total(samples, requests, application="metered", status_code="200") == 3 * len(nodes)
        # Each node's HAProxy reports its own share, tagged with its node.
        responses = "haproxy_backend_http_responses_total"
        for node in nodes.values():
            mine = {"proxy": "app_metered", "code": "2xx", "node_id": node.node_id}
            assert total(samples, responses, **mine) == 3, node.name
    finally:
        swell.delete("metered")
