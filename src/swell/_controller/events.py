"""The controller's recent events (deploys, replica failures, autoscaling), bounded in memory.

The status page lists the newest; counts per kind never shrink, so they also serve as
Prometheus counters (replica starts, health-check failures, autoscaling decisions).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

MAX_EVENTS = 200

# Kinds, spelled once.
DEPLOY_REQUESTED = "deploy_requested"
DEPLOYED = "deployed"
DEPLOY_FAILED = "deploy_failed"
APP_DELETED = "app_deleted"
REPLICA_RUNNING = "replica_running"
REPLICA_START_FAILED = "replica_start_failed"
REPLICA_DIED = "replica_died"
HEALTH_CHECK_FAILED = "health_check_failed"
REPLICA_STOPPED = "replica_stopped"
AUTOSCALED = "autoscaled"


@dataclass(frozen=True)
class Event:
    id: int
    time: float  # seconds since the epoch
    kind: str
    application: str
    deployment: str
    replica: str
    message: str


class EventLog:
    """The last ``MAX_EVENTS`` events, and a count per (application, deployment, kind)."""

    def __init__(self, size: int = MAX_EVENTS) -> None:
        self._events: deque[Event] = deque(maxlen=size)
        self._ids = itertools.count(1)
        self.counts: dict[tuple[str, str, str], int] = {}

    def record(
        self,
        kind: str,
        application: str,
        deployment: str = "",
        message: str = "",
        replica: str = "",
    ) -> None:
        event = Event(
            next(self._ids), time.time(), kind, application, deployment, replica, message[:500]
        )
        self._events.append(event)
        key = (application, deployment, kind)
        self.counts[key] = self.counts.get(key, 0) + 1

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest ``limit`` events, newest first."""
        newest = list(self._events)[-limit:]
        return [asdict(event) for event in reversed(newest)]
