"""One autoscaling round for a deployment: collect load, let the pure policy decide."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from swell._controller.deployment_state import ReplicaState
from swell._controller.model import AppRuntime, DeploymentRuntime
from swell._controller.replica_client import ReplicaClient
from swell._protocol import BACKEND_QUEUE

logger = logging.getLogger("swell.controller")


class QueueReader(Protocol):
    async def sessions(self, app_name: str) -> dict[str, int]: ...


def metrics_due(deployment: DeploymentRuntime, now: float) -> bool:
    if deployment.autoscaler is None or deployment.metrics_in_flight:
        return False
    # Waiting requests with nothing running are acted on at once, not on the interval.
    starved = deployment.state.target == 0 and deployment.waiting > 0
    return starved or now >= deployment.metrics_due_at


async def autoscale(
    app: AppRuntime,
    deployment: DeploymentRuntime,
    replicas: ReplicaClient,
    ingress: QueueReader,
    clock: Callable[[], float],
) -> bool:
    """Record each replica's load (and HAProxy's queue), then set the target; True if changed."""
    autoscaler = deployment.autoscaler
    assert autoscaler is not None
    try:
        now = clock()
        metrics = autoscaler.metrics
        running = {
            replica_id: record.control_address
            for replica_id, record in deployment.state.replicas.items()
            if record.state is ReplicaState.RUNNING and record.control_address is not None
        }
        loads = await asyncio.gather(*(replicas.load(address) for address in running.values()))
        for replica_id, load in zip(running, loads, strict=True):
            if load is not None:
                metrics.record(replica_id, now, load)
        for replica_id in list(metrics.replica_ids()):
            if replica_id not in running:
                metrics.forget(replica_id)
        queued = 0
        if deployment.target.is_ingress and app.in_haproxy:
            with contextlib.suppress(Exception):
                queued = (await ingress.sessions(app.name)).get(BACKEND_QUEUE, 0)
        waiting = deployment.waiting + (1 if clock() < deployment.demand_until else 0)
        target = autoscaler.decide(
            now, deployment.state.target, metrics.total_load(now) + queued, waiting
        )
        if target == deployment.state.target:
            return False
        logger.info(
            "autoscaling %s from %d to %d replicas",
            deployment.target.name,
            deployment.state.target,
            target,
        )
        deployment.state.target = target
        return True
    finally:
        deployment.metrics_in_flight = False
        deployment.metrics_due_at = clock() + autoscaler.config.metrics_interval_s
