"""A worker node removed under light load: its replicas are replaced on the other nodes and
the other nodes' proxies keep serving meanwhile."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter

import httpx
import pytest

import swell
from swell._ray.cluster import HTTP_PORT_LABEL
from tests.ray.apps import Where
from tests.ray.conftest import SLOT, Load, RayCluster, http_port, replica_nodes, wait_until

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(180)


def test_removed_worker_node_is_replaced(swell_on_ray: RayCluster) -> None:
    remove_a_worker_under_load(swell_on_ray, kill_its_processes=False)


def remove_a_worker_under_load(swell_on_ray: RayCluster, kill_its_processes: bool) -> None:
    """Remove a worker that holds replicas while requests flow through the other nodes'
    proxies; with ``kill_its_processes`` its replica processes die at once too, as on a
    machine that vanishes (else they drain: their lifeline, the actor, is gone)."""
    nodes = swell_on_ray.nodes
    app = Where.options(
        num_replicas=3,
        ray_actor_options={"num_cpus": 0.1, "resources": {SLOT: 1}},
        graceful_shutdown_timeout_s=2,
    ).bind()
    swell.run(app, name="sturdy", route_prefix="/")
    placed = replica_nodes("sturdy", "Where")
    on = Counter(swell_on_ray.by_id(node_id).name for node_id in placed.values())
    victim = "a" if on["a"] else "b"
    survivors = [name for name in nodes if name != victim]
    assert on[victim] >= 1, on

    with Load([nodes[name].url + "/" for name in survivors]) as load:
        wait_until(lambda: load.outcomes["ok"] >= 20, 30, "traffic before the removal")
        before = load.outcomes["ok"]
        doomed = [
            r.pid
            for r in swell.status().applications["sturdy"].deployments["Where"].replicas
            if r.node_id == nodes[victim].node_id and r.pid is not None
        ]
        removed_at = time.monotonic()
        if kill_its_processes:
            for pid in doomed:
                os.kill(pid, signal.SIGKILL)
        swell_on_ray.cluster.remove_node(nodes[victim].handle, allow_graceful=False)

        def replaced() -> bool:
            running = replica_nodes("sturdy", "Where")
            return len(running) == 3 and nodes[victim].node_id not in running.values()

        wait_until(replaced, 90, "three running replicas, none on the removed node")
        replaced_after = time.monotonic() - removed_at
        served = load.outcomes["ok"]
        wait_until(lambda: load.outcomes["ok"] >= served + 20, 30, "traffic after replacement")

    # The removed node's proxy is gone from the status; the others remain.
    wait_until(
        lambda: set(swell.status().proxies) == {nodes[n].node_id for n in survivors},
        30,
        "the removed node's proxy to leave the status",
    )
    after = Counter(swell_on_ray.by_id(n).name for n in replica_nodes("sturdy", "Where").values())
    print(
        f"\nnode loss ({'replica processes killed' if kill_its_processes else 'replicas drain'})"
        f": placement before {dict(on)}, removed node {victim!r}, placement after "
        f"{dict(after)}; replaced in {replaced_after:.1f}s; requests {dict(load.outcomes)} "
        f"({before} ok before the removal, {load.failed} failed)"
    )
    assert load.failed <= 2, load.outcomes
    swell.delete("sturdy")


def test_a_node_that_joins_gets_a_proxy_serving_every_app(swell_on_ray: RayCluster) -> None:
    swell.run(Where.options(name="Early").bind(), name="early", route_prefix="/early")
    try:
        port = http_port()
        handle = swell_on_ray.cluster.add_node(
            num_cpus=1,
            object_store_memory=80 * 1024 * 1024,
            labels={HTTP_PORT_LABEL: str(port)},
        )

        def serves() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/early", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(serves, 60, "the new node's HAProxy to serve the app deployed before it")
        except AssertionError as error:
            raise AssertionError(f"{error}; proxies: {swell.status().proxies}") from None
        # Its HAProxy serves as soon as it starts; the controller records the proxy when the
        # start call's answer comes back, a moment later on a loaded machine.
        wait_until(
            lambda: handle.node_id in swell.status().proxies, 30, "the new proxy in the status"
        )
    finally:
        swell.delete("early")
