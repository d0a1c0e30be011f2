"""What ``swell.status()`` returns: typed views over the admin API's status document."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ReplicaStatus:
    replica_id: str
    state: str
    pid: int | None
    address: str | None
    data_address: str | None = None
    control_address: str | None = None
    node_id: str | None = None  # the Ray node (Ray engine only)


@dataclass(frozen=True)
class DeploymentStatusOverview:
    name: str
    status: str
    message: str
    target_replicas: int
    replica_states: dict[str, int]
    replicas: list[ReplicaStatus]
    status_trigger: str = ""


@dataclass(frozen=True)
class ApplicationStatusOverview:
    name: str
    status: str
    message: str
    route_prefix: str | None
    deployments: dict[str, DeploymentStatusOverview]
    last_deployed_time_s: float = 0.0


@dataclass(frozen=True)
class ServeStatus:
    applications: dict[str, ApplicationStatusOverview]
    proxies: dict[str, dict[str, Any]] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    target_capacity: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ServeStatus:
        applications = {}
        for name, app in data.get("applications", {}).items():
            deployments = {
                dname: DeploymentStatusOverview(
                    name=dname,
                    status=dep["status"],
                    message=dep.get("message", ""),
                    target_replicas=dep.get("target_replicas", 0),
                    replica_states=dict(dep.get("replica_states", {})),
                    replicas=[ReplicaStatus(**r) for r in dep.get("replicas", [])],
                    status_trigger=dep.get("status_trigger", ""),
                )
                for dname, dep in app.get("deployments", {}).items()
            }
            applications[name] = ApplicationStatusOverview(
                name=name,
                status=app["status"],
                message=app.get("message", ""),
                route_prefix=app.get("route_prefix"),
                deployments=deployments,
                last_deployed_time_s=app.get("last_deployed_time_s") or 0.0,
            )
        return cls(
            applications=applications,
            proxies=data.get("proxies", {}),
            raw=data,
            target_capacity=data.get("target_capacity"),
        )
