"""What the controller keeps per application and deployment: the target, and what runs."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from swell._controller.autoscaler import Autoscaler
from swell._controller.deployment_state import DeploymentState
from swell._engines.base import ReplicaRuntime
from swell._spec import CallableRef
from swell.config import DeploymentConfig


@dataclass(frozen=True)
class DeploymentTarget:
    """One deployment as it should run: code, constructor arguments, options."""

    name: str
    ref: CallableRef
    init_args: bytes
    config: DeploymentConfig
    is_ingress: bool
    version: str
    env_vars: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None


@dataclass
class DeploymentRuntime:
    """One deployment's target, its replicas' state, and what routers are told."""

    target: DeploymentTarget
    state: DeploymentState
    runtimes: dict[str, ReplicaRuntime] = field(default_factory=dict)
    # Replicas being started: their bring-up task, cancelled if they are stopped meanwhile.
    starting: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    # What routers see: replica id -> data-plane address, versioned so watchers can wait on it.
    replica_set: dict[str, str] = field(default_factory=dict)
    # Starts from the clock so a restarted controller never reuses a version a router knows.
    set_version: int = field(default_factory=lambda: time.time_ns() // 1000)
    set_changed: asyncio.Event = field(default_factory=asyncio.Event)
    autoscaler: Autoscaler | None = None
    metrics_due_at: float = 0.0
    metrics_in_flight: bool = False
    # Requests waiting for this deployment with no replica to take them (scale from zero):
    # the ingress's wake-up server and callers' routers report them.
    waiting: int = 0
    demand_until: float = 0.0
    # Replica id -> rank (ReplicaContext.rank): the lowest rank no live replica holds.
    ranks: dict[str, int] = field(default_factory=dict)

    def next_rank(self, replica_id: str) -> int:
        """Give ``replica_id`` the lowest rank that no replica still in the state holds."""
        self.ranks = {r: n for r, n in self.ranks.items() if r in self.state.replicas}
        taken = set(self.ranks.values())
        rank = next(n for n in range(len(taken) + 1) if n not in taken)
        self.ranks[replica_id] = rank
        return rank

    @classmethod
    def create(cls, target: DeploymentTarget) -> DeploymentRuntime:
        state = DeploymentState(
            target.name, target.config.target_replicas(), target.config.health_check_period_s
        )
        state.set_version(target.version)
        deployment = cls(target, state)
        deployment.configure_autoscaling()
        return deployment

    def configure_autoscaling(self) -> None:
        policy = self.target.config.effective_autoscaling()
        if policy is None:
            self.autoscaler = None
        elif self.autoscaler is None or self.autoscaler.config != policy:
            self.autoscaler = Autoscaler(policy)

    def publish(self, replica_id: str, data_address: str | None) -> None:
        """Add (with an address) or remove (None) a replica from the routers' view."""
        if data_address is None:
            if self.replica_set.pop(replica_id, None) is None:
                return
        else:
            self.replica_set[replica_id] = data_address
        self._announce()

    def publish_limits(self) -> None:
        """The queue limit changed: routers learn it through the same watch."""
        self._announce()

    def _announce(self) -> None:
        self.set_version += 1
        self.set_changed.set()
        self.set_changed = asyncio.Event()

    def replica_set_document(self) -> dict[str, Any]:
        return {
            "version": self.set_version,
            "replicas": dict(self.replica_set),
            "max_ongoing_requests": self.target.config.max_ongoing_requests,
            "max_queued_requests": self.target.config.max_queued_requests,
        }


@dataclass
class AppRuntime:
    """One application: its route and its deployments."""

    name: str
    route_prefix: str | None
    deployments: dict[str, DeploymentRuntime]
    deployed_at: float
    # Set while its replicas drain and stop; the app is shown as DELETING meanwhile.
    deleting: bool = False
    deleted: asyncio.Event = field(default_factory=asyncio.Event)

    def ingress(self) -> DeploymentRuntime | None:
        return next((d for d in self.deployments.values() if d.target.is_ingress), None)

    @property
    def in_haproxy(self) -> bool:
        """Whether its ingress replicas are servers in HAProxy (it has a route)."""
        return self.route_prefix is not None
