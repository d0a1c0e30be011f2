"""The controller is a detached actor on the head node: killed under load it comes back by
itself, adopts every replica and proxy (none restarted), and nothing is dropped meanwhile.
Also a rolling update across nodes under load."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import httpx
import pytest

import swell
from swell._admin_client import fetch_status
from swell._ray.controller_actor import CONTROLLER_NAME
from tests.ray.apps import Back, Front, Versioned, Where
from tests.ray.conftest import SLOT, Load, RayCluster, replica_nodes, wait_until

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(240)

# How long a killed controller actor may take to serve its admin API again (Ray restarts the
# process, which imports swell, reads the checkpoint and adopts every actor).
_BACK_WITHIN_S = 60.0


def _swell_actors() -> dict[str, str]:
    """Name -> actor id of every named actor swell runs."""
    names = [
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == "swell"
    ]
    return {name: ray.get_actor(name, namespace="swell")._actor_id.hex() for name in names}


def _replicas(app: str, deployment: str) -> dict[str, int | None]:
    """replica id -> pid, for the RUNNING replicas."""
    replicas = swell.status().applications[app].deployments[deployment].replicas
    return {r.replica_id: r.pid for r in replicas if r.state == "RUNNING"}


def _proxy_pids() -> dict[str, tuple[Any, Any]]:
    """node id -> (actor pid, HAProxy pid) of every node's proxy."""
    return {n: (p.get("actor_pid"), p.get("pid")) for n, p in swell.status().proxies.items()}


def test_controller_actor_killed_under_load(swell_on_ray: RayCluster) -> None:
    nodes = swell_on_ray.nodes
    spread = {"num_cpus": 0.1, "resources": {SLOT: 1}}
    swell.run(
        Where.options(num_replicas=3, ray_actor_options=spread).bind(),
        name="steady",
        route_prefix="/",
    )
    swell.run(Front.bind(Back.bind()), name="calls", route_prefix="/calls")
    before = {"Where": _replicas("steady", "Where"), "Back": _replicas("calls", "Back")}
    proxies = _proxy_pids()
    actors = _swell_actors()
    status = swell.status().raw
    old_pid = status["controller_info"]["pid"]
    admin = f"http://127.0.0.1:{status['admin_port']}"
    token = swell.api._require_instance().admin_token
    assert len(set(replica_nodes("steady", "Where").values())) >= 2  # across nodes
    urls = [node.url + path for node in nodes.values() for path in ("/", "/calls")]

    with Load(urls, clients=4, pause=0.0) as load:
        wait_until(lambda: load.outcomes["ok"] >= 50, 30, "traffic before the kill")
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)  # the actor's process, as a crash would end it

        def admin_back() -> bool:
            try:
                return bool(fetch_status(admin, token)["controller_info"]["pid"] != old_pid)
            except Exception:
                return False

        wait_until(admin_back, _BACK_WITHIN_S, "the restarted controller's admin API")
        back_after = time.monotonic() - killed_at
        served = load.outcomes["ok"]
        wait_until(lambda: load.outcomes["ok"] >= served + 50, 30, "traffic after the restart")

    print(
        f"\ncontroller actor SIGKILLed under load: admin API back in {back_after:.1f}s; "
        f"requests {dict(load.outcomes)} ({load.failed} failed)"
    )
    assert load.failed == 0, (load.outcomes, load.errors)
    # Nothing was restarted: the same replica processes, the same actors, the same proxies.
    assert _replicas("steady", "Where") == before["Where"]
    assert _replicas("calls", "Back") == before["Back"]
    assert _proxy_pids() == proxies
    after = _swell_actors()
    assert {n: i for n, i in after.items() if n != CONTROLLER_NAME} == {
        n: i for n, i in actors.items() if n != CONTROLLER_NAME
    }
    assert after[CONTROLLER_NAME] == actors[CONTROLLER_NAME]  # the same actor, restarted

    # The new controller drives what it adopted: a scale-up lands, through every proxy.
    swell.run(
        Where.options(num_replicas=4, ray_actor_options=spread).bind(),
        name="steady",
        route_prefix="/",
    )
    grown = _replicas("steady", "Where")
    assert len(grown) == 4 and set(before["Where"]) < set(grown)
    for node in nodes.values():
        assert httpx.get(node.url + "/calls", timeout=30).json()["back"] in before["Back"]
    swell.delete("steady")
    swell.delete("calls")


def test_rolling_update_across_nodes_under_load(swell_on_ray: RayCluster) -> None:
    nodes = swell_on_ray.nodes
    spread = {"num_cpus": 0.1, "resources": {SLOT: 1}}
    swell.run(
        Versioned.options(num_replicas=2, ray_actor_options=spread).bind("v1"),
        name="rolling",
        route_prefix="/",
    )
    old = set(_replicas("rolling", "Versioned"))
    with Load([node.url + "/" for node in nodes.values()], clients=4, pause=0.0) as load:
        wait_until(lambda: load.outcomes["ok"] >= 50, 30, "traffic before the update")
        swell.run(
            Versioned.options(num_replicas=2, ray_actor_options=spread).bind("v2"),
            name="rolling",
            route_prefix="/",
        )
        wait_until(
            lambda: (
                not (set(_replicas("rolling", "Versioned")) & old)
                and len(_replicas("rolling", "Versioned")) == 2
            ),
            90,
            "the old replicas to be replaced",
        )
        served = load.outcomes["ok"]
        wait_until(lambda: load.outcomes["ok"] >= served + 50, 30, "traffic after the update")
    print(f"\nrolling update across nodes under load: requests {dict(load.outcomes)}")
    assert load.failed == 0, (load.outcomes, load.errors)
    for node in nodes.values():
        versions = {httpx.get(node.url + "/", timeout=30).json()["version"] for _ in range(6)}
        assert versions == {"v2"}, (node.name, versions)
    swell.delete("rolling")


def test_a_controller_killed_for_good_is_adopted_by_the_next_start(
    swell_on_ray: RayCluster,
) -> None:
    """Killed with no restart, its checkpoint stays in the GCS: the next ``swell.start``
    adopts its replicas and proxies instead of starting new ones."""
    from swell._ray.driver import get_controller

    head = swell_on_ray.nodes["head"]
    swell.run(Where.options(name="Kept").bind(), name="kept", route_prefix="/kept")
    before = _replicas("kept", "Kept")
    proxies = _proxy_pids()
    ray.kill(ray.get_actor(CONTROLLER_NAME, namespace="swell"), no_restart=True)
    wait_until(lambda: get_controller() is None, 30, "the controller actor to be gone")
    assert httpx.get(head.url + "/kept", timeout=30).status_code == 200  # serving meanwhile
    swell.shutdown()  # this driver's view of the dead controller
    swell.start(
        http_options={"host": "127.0.0.1", "port": head.port},
        admin_port=0,
        address=swell_on_ray.cluster.address,
    )
    assert _replicas("kept", "Kept") == before
    assert _proxy_pids() == proxies
    assert httpx.get(head.url + "/kept", timeout=30).json()["replica"] in before
    swell.delete("kept")
