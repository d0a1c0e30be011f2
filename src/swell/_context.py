"""The replica context: which app, deployment and replica the running code belongs to."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from swell.schema import ReplicaRank


class ReplicaID(str):
    """A replica's id: the string swell shows everywhere, with Ray's ``unique_id`` too."""

    __slots__ = ()

    @property
    def unique_id(self) -> str:
        """The random part of the id, unique among the deployment's replicas."""
        return self.rsplit("-", 1)[-1]


@dataclass(frozen=True)
class ReplicaContext:
    """What ``swell.get_replica_context()`` returns inside a replica (constructor included).

    ``rank`` (0 to ``world_size - 1``) is unique among the deployment's live replicas; a
    replacement takes the rank of the one it replaces. ``world_size`` is the deployment's
    target replica count when this replica started.
    """

    app_name: str
    deployment: str
    replica_id: str
    servable_object: Any
    rank: ReplicaRank = field(default_factory=lambda: ReplicaRank(0))
    world_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "replica_id", ReplicaID(self.replica_id))

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


# The model a request is for (the ``serve_multiplexed_model_id`` header, or a handle call's
# ``multiplexed_model_id``); "" when it names none. A context variable, so each request's task
# (and the threads its sync code runs on) sees its own.
multiplexed_model_id: ContextVar[str] = ContextVar("swell_multiplexed_model_id", default="")
