"""The engine interface: how the controller starts, watches and stops replicas.

The controller knows only this interface; ``local.py`` runs replicas as subprocesses, and a Ray
engine runs them as actors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from swell._spec import ReplicaSpec


@dataclass(frozen=True)
class ReadyInfo:
    """What a replica reports once its constructor ran and its servers listen."""

    host: str
    port: int
    pid: int
    data_port: int | None = None
    # The control listener: HAProxy's readiness check and the controller's calls.
    control_port: int | None = None
    # With the pid, the process's identity (its start time in clock ticks since boot), so a
    # checkpointed replica is never confused with a process that reused its pid.
    start_time: int | None = None
    # The Ray node it runs on (the Ray engine only).
    node_id: str | None = None
    # The gRPC listener of an ingress replica when grpc_options has servicer functions.
    grpc_port: int | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def control_address(self) -> str:
        """Where the control endpoints answer (the user port on replicas that predate them)."""
        return f"{self.host}:{self.control_port or self.port}"

    @property
    def data_address(self) -> str | None:
        return None if self.data_port is None else f"{self.host}:{self.data_port}"


class ReplicaStartupError(Exception):
    """The replica's constructor (or process) failed before it became ready."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ReplicaRuntime(Protocol):
    """One started replica, as its engine sees it."""

    @property
    def replica_id(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    # What it reported once ready (None until then); checkpointed for adoption.
    ready_info: ReadyInfo | None

    async def wait_ready(self) -> ReadyInfo:
        """Resolve once ready; raise ReplicaStartupError with the cause if it never will be."""
        ...

    async def wait_exit(self) -> int:
        """Resolve with the exit status once the replica has stopped."""
        ...

    async def stop(self, timeout_s: float) -> None:
        """Ask it to finish in-flight work and exit; force it after ``timeout_s``."""
        ...

    def kill(self) -> None:
        """Stop it at once."""
        ...


class Engine(Protocol):
    """Starts replicas somewhere (local processes, Ray actors)."""

    async def start_replica(self, spec: ReplicaSpec) -> ReplicaRuntime: ...

    async def shutdown(self) -> None: ...
