"""A real multi-node Ray cluster on this machine, and swell started on it.

Every fake node has a custom resource named after it (so placement is checkable) and its own
HTTP port through the ``swell-http-port`` node label (one HAProxy per node on one machine).
Skipped cleanly when Ray is not installed.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

ray = pytest.importorskip("ray")
cluster_utils = pytest.importorskip("ray.cluster_utils")

import swell  # noqa: E402
from swell._ray.cluster import HTTP_PORT_LABEL  # noqa: E402

NODE_NAMES = ("head", "a", "b")
# A resource every node has, in different amounts: a deployment that asks for one per replica
# cannot put three replicas on the head alone, and loses no capacity it needs when one worker
# is removed.
SLOT = "swell_slot"
SLOTS = {"head": 1, "a": 2, "b": 2}
# Seconds: quick node-death detection, so a removed node's replicas are replaced promptly.
_FAST_HEALTH_CHECKS = {
    "health_check_period_ms": 500,
    "health_check_failure_threshold": 3,
}


def _ephemeral_range() -> tuple[int, int]:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            low, high = (int(p) for p in ports.read().split())
            return low, high
    except (OSError, ValueError):
        return 32768, 60999


def http_port() -> int:
    """A free port below the ephemeral range: Ray's processes (raylets, agents, workers) bind
    ephemeral ports while nodes start, and would sometimes take one reserved with port 0."""
    low, _ = _ephemeral_range()
    for _ in range(200):
        port = random.randrange(20000, max(20001, min(low, 32000)))
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


@dataclass
class Node:
    name: str
    port: int
    handle: Any  # ray._private.node.Node
    node_id: str = ""

    @property
    def resource(self) -> str:
        return f"swell_node_{self.name}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class RayCluster:
    cluster: Any
    nodes: dict[str, Node] = field(default_factory=dict)

    def by_id(self, node_id: str) -> Node:
        return next(node for node in self.nodes.values() if node.node_id == node_id)


def _node_args(name: str, port: int) -> dict[str, Any]:
    return {
        "num_cpus": 2,
        "object_store_memory": 80 * 1024 * 1024,
        "resources": {f"swell_node_{name}": 100, SLOT: SLOTS[name]},
        "labels": {HTTP_PORT_LABEL: str(port)},
    }


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    """Three nodes (head, a, b); the test process joins as swell's driver."""
    ports = {name: http_port() for name in NODE_NAMES}
    head_args = {
        **_node_args("head", ports["head"]),
        "include_dashboard": False,
        "_system_config": _FAST_HEALTH_CHECKS,
    }
    cluster = cluster_utils.Cluster(initialize_head=True, head_node_args=head_args)
    result = RayCluster(cluster)
    try:
        result.nodes["head"] = Node("head", ports["head"], cluster.head_node)
        for name in NODE_NAMES[1:]:
            handle = cluster.add_node(**_node_args(name, ports[name]))
            result.nodes[name] = Node(name, ports[name], handle)
        for node in result.nodes.values():
            node.node_id = node.handle.node_id
        yield result
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="module")
def swell_on_ray(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """swell started on the cluster (its controller in this process); stopped afterwards."""
    swell.start(
        http_options={"host": "127.0.0.1", "port": ray_cluster.nodes["head"].port},
        admin_port=0,
        address=ray_cluster.cluster.address,
    )
    try:
        yield ray_cluster
    finally:
        swell.shutdown()


def get_json(url: str, path: str = "/") -> Any:
    response = httpx.get(url + path, timeout=30)
    response.raise_for_status()
    return response.json()


def replica_nodes(app: str, deployment: str) -> dict[str, str]:
    """replica id -> node id, for the RUNNING replicas of a deployment."""
    status = swell.status().raw
    replicas = status["applications"][app]["deployments"][deployment]["replicas"]
    return {r["replica_id"]: r["node_id"] for r in replicas if r["state"] == "RUNNING"}


class Load:
    """Requests back to back from ``clients`` threads, round robin over the given URLs
    (``pause`` seconds between one client's requests), counting the outcomes."""

    def __init__(self, urls: list[str], clients: int = 1, pause: float = 0.01) -> None:
        self._urls = urls
        self._pause = pause
        self.outcomes: Counter[str] = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), name=f"swell-test-load-{i}", daemon=True)
            for i in range(clients)
        ]

    def _run(self, offset: int) -> None:
        with httpx.Client(timeout=10) as client:
            i = offset
            while not self._stop.is_set():
                url = self._urls[i % len(self._urls)]
                i += 1
                try:
                    response = client.get(url)
                    kind = "ok" if response.status_code == 200 else f"http {response.status_code}"
                    detail = response.text[:200]
                except httpx.HTTPError as error:
                    kind, detail = type(error).__name__, str(error)
                with self._lock:
                    self.outcomes[kind] += 1
                    if kind != "ok" and len(self.errors) < 10:
                        self.errors.append(f"{url}: {kind} {detail}")
                self._stop.wait(self._pause)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    @property
    def failed(self) -> int:
        return sum(n for kind, n in self.outcomes.items() if kind != "ok")
