"""The replica context: which app, deployment and replica the running code belongs to."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ReplicaContext:
    """What ``swell.get_replica_context()`` returns inside a replica."""

    app_name: str
    deployment: str
    replica_id: str
    servable_object: Any

    @property
    def replica_tag(self) -> str:
        return self.replica_id


_current: ReplicaContext | None = None


def set_replica_context(context: ReplicaContext) -> None:
    global _current
    _current = context


def get_replica_context() -> ReplicaContext:
    """The context of the replica this code runs in; an error anywhere else."""
    if _current is None:
        raise RuntimeError(
            "get_replica_context() was called outside a replica; call it from a "
            "deployment's constructor or methods."
        )
    return _current
