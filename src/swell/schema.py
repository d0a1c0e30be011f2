"""Ray Serve's ``ray.serve.schema`` names, for code that imports them from there.

Where swell has the same thing, the name is an alias of swell's own model, so no option is
defined twice: ``ServeDeploySchema`` is swell's config file (``swell.config.ServeConfig``),
``ServeApplicationSchema`` one of its applications, ``DeploymentSchema`` one of their
``deployments[]`` entries, and the status classes are what ``swell.status()`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from swell.config import (
    ApplicationConfig,
    DeploymentOverride,
    LoggingConfig,
    ServeConfig,
)
from swell.serve_status import (
    ApplicationStatusOverview,
    DeploymentStatusOverview,
    ReplicaStatus,
    ServeStatus,
)

__all__ = [
    "ApplicationStatus",
    "ApplicationStatusOverview",
    "DeploymentSchema",
    "DeploymentStatusOverview",
    "LoggingConfig",
    "ReplicaRank",
    "ReplicaStatus",
    "ServeApplicationSchema",
    "ServeDeploySchema",
    "ServeStatus",
]

ServeDeploySchema = ServeConfig
ServeApplicationSchema = ApplicationConfig
DeploymentSchema = DeploymentOverride


class ApplicationStatus(StrEnum):
    """An application's status; equal to the strings ``swell.status()`` reports."""

    NOT_STARTED = "NOT_STARTED"
    DEPLOYING = "DEPLOYING"
    DEPLOY_FAILED = "DEPLOY_FAILED"
    RUNNING = "RUNNING"
    UNHEALTHY = "UNHEALTHY"
    DELETING = "DELETING"


@dataclass(frozen=True)
class ReplicaRank:
    """A replica's place among its deployment's replicas: ``get_replica_context().rank``.

    ``rank`` runs from 0 to ``world_size - 1``; on one node ``node_rank`` is 0 and
    ``local_rank`` equals ``rank``.
    """

    rank: int
    node_rank: int = 0
    local_rank: int = 0
