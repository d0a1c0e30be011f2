"""The driver's connection to a Ray cluster, and what swell reads about its nodes."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from swell.exceptions import ConfigError

# Every actor swell creates lives in this namespace, so names such as a node's proxy are the
# same for every driver that connects.
NAMESPACE = "swell"

# Test-oriented: a node started with this label (`ray start --labels='{"swell-http-port":
# "8001"}'`, or `labels=` in ray.cluster_utils) serves HTTP on that port instead of
# http_options.port, so several fake nodes on one machine can each run an HAProxy.
HTTP_PORT_LABEL = "swell-http-port"

# The resource Ray gives only the head node.
_HEAD_RESOURCE = "node:__internal_head__"

INSTALL_HINT = "install it with `pip install 'swell[ray]'`"

# ray.init keeps retrying an address where no GCS answers; swell checks it first, this long.
_PROBE_DEADLINE_S = 10.0
_KILL_DEADLINE_S = 10.0


def import_ray() -> Any:
    """``ray``, or an error that says how to get it."""
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "address (--address) asks for a Ray cluster, but Ray is not installed: "
            f"{INSTALL_HINT}, or leave address unset to run replicas as local processes."
        ) from None
    return ray


@dataclass
class RayConnection:
    """This process's link to the cluster; disconnects only if swell connected it."""

    owned: bool
    node_ip: str
    node_id: str

    def close(self) -> None:
        if self.owned:
            ray = import_ray()
            with contextlib.suppress(Exception):
                ray.shutdown()


def connect(address: str) -> RayConnection:
    """Join the cluster at ``address`` ('auto' honours RAY_ADDRESS, as Ray does), or reuse the
    connection this process already has."""
    ray = import_ray()
    owned = False
    if not ray.is_initialized():
        _probe(address)
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as error:  # ConnectionError, or a timeout reaching the GCS
            raise ConfigError(
                f"address={address!r}: could not connect to a Ray cluster ({error}). Start one "
                "with `ray start --head`, or give its address (host:port of the GCS)."
            ) from None
        owned = True
    return RayConnection(owned, *this_node())


def _probe(address: str) -> None:
    """Fail within a deadline when nothing listens at a GCS address (host:port, given or in
    RAY_ADDRESS for 'auto'); Ray finds a local cluster for a bare 'auto' itself, quickly."""
    target = os.environ.get("RAY_ADDRESS", "") if address == "auto" else address
    host, sep, port = target.rpartition(":")
    if not sep or "://" in target or not port.isdigit():
        return
    try:
        with socket.create_connection((host.strip("[]"), int(port)), _PROBE_DEADLINE_S):
            pass
    except OSError as error:
        raise ConfigError(
            f"address={address!r}: nothing answers at {target} ({error.strerror or error}). "
            "Give the address of a running Ray cluster's GCS (`ray start --head` prints it), "
            "or 'auto' on one of its nodes."
        ) from None


@dataclass(frozen=True)
class NodeInfo:
    """One alive node, as swell needs it."""

    node_id: str
    ip: str
    is_head: bool
    http_port: int | None  # from HTTP_PORT_LABEL, when the node has it


def alive_nodes() -> list[NodeInfo]:
    """Every alive node (a blocking GCS call: run it off the event loop)."""
    ray = import_ray()
    nodes = []
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        labels = node.get("Labels") or {}
        port = labels.get(HTTP_PORT_LABEL)
        nodes.append(
            NodeInfo(
                node["NodeID"],
                node["NodeManagerAddress"],
                _HEAD_RESOURCE in (node.get("Resources") or {}),
                int(port) if port is not None and str(port).isdigit() else None,
            )
        )
    return nodes


def kill_named_actors(prefix: str, keep: set[str]) -> int:
    """Kill swell's actors whose name starts with ``prefix``, except ``keep``: the leftovers of
    a controller that ended without stopping them (they are detached). Returns how many."""
    ray = import_ray()

    def strays() -> set[str]:
        return {
            name
            for entry in ray.util.list_named_actors(all_namespaces=True)
            if entry.get("namespace") == NAMESPACE
            and (name := str(entry.get("name", ""))).startswith(prefix)
            and name not in keep
        }

    killed = strays()
    for name in killed:
        with contextlib.suppress(Exception):
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=True)
    # Their names are free only once the GCS has them dead: a new actor may need one.
    deadline = time.monotonic() + _KILL_DEADLINE_S
    while killed and strays() & killed and time.monotonic() < deadline:
        time.sleep(0.1)
    return len(killed)


def this_node() -> tuple[str, str]:
    """The IP and node id of the node this process (driver or actor) runs on."""
    ray = import_ray()
    return str(ray.util.get_node_ip_address()), str(ray.get_runtime_context().get_node_id())
