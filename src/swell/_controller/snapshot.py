"""What a controller checkpoints, and how its successor rebuilds state from it.

The snapshot holds the desired state and the running replicas with what identifies their
processes, so a restarted controller adopts live replicas instead of starting new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from swell._controller.deployment_state import ReplicaState
from swell._controller.model import AppRuntime, DeploymentRuntime, DeploymentTarget
from swell._engines.base import ReadyInfo, ReplicaRuntime

# (app name, replica id, ready info) -> the adopted runtime, or None if that process is gone (or is
# another process that reused the pid).
AdoptReplica = Callable[[str, str, ReadyInfo], "ReplicaRuntime | None"]


def take(apps: Iterable[AppRuntime]) -> list[dict[str, Any]]:
    """Desired state plus the running replicas: what a restarted controller adopts."""
    snapshot = []
    for app in apps:
        if app.deleting:
            continue
        deployments = []
        for deployment in app.deployments.values():
            replicas = []
            for record in deployment.state.replicas.values():
                runtime = deployment.runtimes.get(record.replica_id)
                ready = getattr(runtime, "ready_info", None)
                if record.state is not ReplicaState.RUNNING or not isinstance(ready, ReadyInfo):
                    continue
                replicas.append(
                    {"replica_id": record.replica_id, "version": record.version, "ready": ready}
                )
            deployments.append(
                {
                    "target": deployment.target,
                    "replicas_target": deployment.state.target,
                    "replicas": replicas,
                }
            )
        snapshot.append(
            {
                "name": app.name,
                "route_prefix": app.route_prefix,
                "deployed_at": app.deployed_at,
                "deployments": deployments,
            }
        )
    return snapshot


def restore(
    saved_apps: list[dict[str, Any]], adopt: AdoptReplica, now: float
) -> tuple[list[AppRuntime], list[tuple[str, str]]]:
    """Rebuild applications, adopting replicas still alive.

    Returns the applications and (app, replica id) of every replica that is gone, so its
    HAProxy server can be removed.
    """
    apps, gone = [], []
    for saved in saved_apps:
        deployments = {}
        for item in saved["deployments"]:
            target: DeploymentTarget = item["target"]
            deployment = DeploymentRuntime.create(target)
            deployment.state.target = item["replicas_target"]
            for replica in item["replicas"]:
                replica_id, ready = replica["replica_id"], replica["ready"]
                runtime = adopt(saved["name"], replica_id, ready)
                if runtime is None:
                    gone.append((saved["name"], replica_id))
                    continue
                deployment.state.on_started(replica_id, now, ready.pid)
                deployment.state.replicas[replica_id].version = replica["version"]
                deployment.state.on_ready(
                    replica_id, ready.address, ready.pid, now, ready.control_address
                )
                deployment.runtimes[replica_id] = runtime
                if ready.data_address is not None:
                    deployment.publish(replica_id, ready.data_address)
            deployments[target.name] = deployment
        apps.append(
            AppRuntime(saved["name"], saved["route_prefix"], deployments, saved["deployed_at"])
        )
    return apps, gone
