"""The controller's state rendered as Ray Serve's status document (what the admin API serves)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from swell._controller.deployment_state import DeploymentStatus
from swell._controller.model import AppRuntime, DeploymentRuntime

# The worst deployment status decides the application's.
_SEVERITY = [
    DeploymentStatus.DEPLOY_FAILED,
    DeploymentStatus.UNHEALTHY,
    DeploymentStatus.DEPLOYING,
    DeploymentStatus.UPDATING,
    DeploymentStatus.HEALTHY,
]

_APP_STATUS = {
    DeploymentStatus.HEALTHY: "RUNNING",
    DeploymentStatus.DEPLOYING: "DEPLOYING",
    DeploymentStatus.UPDATING: "DEPLOYING",
    DeploymentStatus.UNHEALTHY: "UNHEALTHY",
    DeploymentStatus.DEPLOY_FAILED: "DEPLOY_FAILED",
}


# A deployment's status as Ray Serve's REST API and KubeRay name them (UPDATING, HEALTHY,
# UNHEALTHY): swell's DEPLOYING (first replicas starting) is Ray's UPDATING, and DEPLOY_FAILED
# (replicas keep failing to start) is shown as UNHEALTHY with the reason in the message; the
# application's status still says DEPLOY_FAILED.
_SHOWN_DEPLOYMENT_STATUS = {
    DeploymentStatus.DEPLOYING: "UPDATING",
    DeploymentStatus.UPDATING: "UPDATING",
    DeploymentStatus.HEALTHY: "HEALTHY",
    DeploymentStatus.UNHEALTHY: "UNHEALTHY",
    DeploymentStatus.DEPLOY_FAILED: "UNHEALTHY",
}


def app_status(app: AppRuntime) -> str:
    """RUNNING, DEPLOYING, UNHEALTHY, DEPLOY_FAILED or DELETING (Ray's names)."""
    if app.deleting:
        return "DELETING"
    statuses = [d.state.status()[0] for d in app.deployments.values()]
    if not statuses:
        return "RUNNING"
    return _APP_STATUS[min(statuses, key=_SEVERITY.index)]


def _deployment_document(app: AppRuntime, name: str) -> tuple[dict[str, Any], str]:
    deployment = app.deployments[name]
    status, message = deployment.state.status()
    shown = message if status is not DeploymentStatus.HEALTHY else ""
    document = {
        "name": name,
        "status": _SHOWN_DEPLOYMENT_STATUS[status],
        "message": shown,
        "target_replicas": deployment.state.target,
        "replica_states": deployment.state.replica_counts(),
        "deployment_config": deployment.target.config.model_dump(mode="json"),
        "replicas": [
            {
                "replica_id": r.replica_id,
                "state": r.state.value,
                "pid": r.pid,
                "address": r.address,
                "control_address": r.control_address,
                "data_address": deployment.replica_set.get(r.replica_id),
                "node_id": _node_of(deployment, r.replica_id),
            }
            for r in deployment.state.replicas.values()
        ],
    }
    return document, f"Deployment '{name}': {message}" if shown else ""


def _node_of(deployment: DeploymentRuntime, replica_id: str) -> str | None:
    """The Ray node a replica runs on (None with the local engine)."""
    runtimes = getattr(deployment, "runtimes", None) or {}
    ready = getattr(runtimes.get(replica_id), "ready_info", None)
    node_id = getattr(ready, "node_id", None)
    return node_id if isinstance(node_id, str) else None


def applications_document(apps: Iterable[AppRuntime]) -> dict[str, Any]:
    """``applications`` of the status document, keyed by application name."""
    applications: dict[str, Any] = {}
    for app in apps:
        deployments: dict[str, Any] = {}
        messages = []
        for name in app.deployments:
            deployments[name], message = _deployment_document(app, name)
            if message:
                messages.append(message)
        applications[app.name] = {
            "name": app.name,
            "route_prefix": app.route_prefix,
            "status": app_status(app),
            "message": "\n".join(messages),
            "last_deployed_time_s": app.deployed_at,
            "deployments": deployments,
        }
    return applications
