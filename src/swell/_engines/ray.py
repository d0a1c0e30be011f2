"""The Ray engine: every replica is a Ray actor, placed by Ray with its ray_actor_options.

The actor (``swell._ray.replica_actor.SwellReplica``) supervises the replica's process on its
node. Exits are seen without polling: the engine keeps one ``wait_exit`` call pending on each
actor, which resolves when the replica's process exits and fails when the actor or its node
dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray

from swell._engines.base import ReadyInfo, ReplicaStartupError
from swell._ray.cluster import NAMESPACE, kill_named_actors
from swell._ray.replica_actor import SwellReplica
from swell._spec import ReplicaSpec

logger = logging.getLogger("swell.engine.ray")

REPLICA_PREFIX = "SWELL_REPLICA-"
# How long an adopting controller waits for a replica actor to say which process it runs.
_ADOPT_DEADLINE_S = 10.0

# What Ray Serve reserves for a replica when ray_actor_options does not say.
DEFAULT_NUM_CPUS = 1.0
_KILL_WAIT_S = 10.0
# The stop call itself may take the drain timeout; past this much more, the actor is killed.
_STOP_GRACE_S = 5.0

_ReplicaActor = ray.remote(SwellReplica)


def _future(ref: Any) -> asyncio.Future[Any]:
    """An ObjectRef as a future of the running loop (Ray resolves it on its own thread)."""
    return asyncio.wrap_future(ref.future())


def actor_options(spec: ReplicaSpec) -> dict[str, Any]:
    """Ray's options for one replica's actor: the deployment's ray_actor_options, Ray Serve's
    default of one CPU, and a name that says which replica it is."""
    options = dict(spec.config.ray_actor_options)
    if options.get("num_cpus") is None:
        options["num_cpus"] = DEFAULT_NUM_CPUS
    options.update(
        name=replica_actor_name(spec.app_name, spec.replica_id),
        namespace=NAMESPACE,
        # Owned by no one: a replica outlives the controller actor that started it, whose
        # successor adopts it (Ray ends an owned actor with its owner).
        lifetime="detached",
        max_restarts=0,  # the controller replaces replicas; Ray must not restart one
        max_concurrency=16,  # start, wait_exit and stop run at once
    )
    return options


def replica_actor_name(app_name: str, replica_id: str) -> str:
    return f"{REPLICA_PREFIX}{app_name}-{replica_id}"


class RayReplica:
    """One replica actor as the controller sees it."""

    def __init__(self, replica_id: str, actor: Any, spec: ReplicaSpec | None = None) -> None:
        """Start ``spec`` in the actor, or (without one) watch an actor already serving."""
        self._replica_id = replica_id
        self._actor = actor
        self.ready_info: ReadyInfo | None = None
        self._status = -1
        self._exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._ready: asyncio.Future[ReadyInfo] = loop.create_future()
        exit_ref = _future(actor.wait_exit.remote())
        self._tasks = [
            loop.create_task(self._watch_exit(exit_ref), name=f"swell-ray-exit-{replica_id}"),
        ]
        if spec is not None:
            start = _future(actor.start.remote(spec.dumps()))
            self._tasks.append(
                loop.create_task(self._await_ready(start), name=f"swell-ray-ready-{replica_id}")
            )

    @classmethod
    def adopted(cls, replica_id: str, actor: Any, ready: ReadyInfo) -> RayReplica:
        """A replica a previous controller started, already serving."""
        replica = cls(replica_id, actor)
        replica.ready_info = ready
        replica._ready.set_result(ready)
        return replica

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def pid(self) -> int | None:
        return None if self.ready_info is None else self.ready_info.pid

    @property
    def node_id(self) -> str | None:
        return None if self.ready_info is None else self.ready_info.node_id

    async def _await_ready(self, start: asyncio.Future[Any]) -> None:
        try:
            result = await start
        except Exception as error:  # the actor died, or could not be created
            self._fail(f"replica actor {self._replica_id} failed before it was ready: {error}")
            return
        if isinstance(result, ReadyInfo):
            self.ready_info = result
            if not self._ready.done():
                self._ready.set_result(result)
        else:
            self._fail(str(result))

    def _fail(self, detail: str) -> None:
        if not self._ready.done():
            self._ready.set_exception(ReplicaStartupError(detail))

    async def _watch_exit(self, exit_ref: asyncio.Future[Any]) -> None:
        try:
            self._status = int(await exit_ref)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            logger.info("replica actor %s is gone: %s", self._replica_id, error)
            self._status = -1
        self._fail(
            f"replica {self._replica_id} exited with status {self._status} before it was ready"
        )
        self._exited.set()
        self.kill()  # its process is gone: give its resources back to the cluster

    async def wait_ready(self) -> ReadyInfo:
        return await asyncio.shield(self._ready)

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return self._status

    async def stop(self, timeout_s: float) -> None:
        """Drain (SIGTERM inside the actor), then kill the actor after ``timeout_s``.

        One that never became ready has nothing to drain (it may not even be placed yet)."""
        if not self._exited.is_set() and self.ready_info is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    _future(self._actor.stop.remote(timeout_s)), timeout_s + _STOP_GRACE_S
                )
        self.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), _KILL_WAIT_S)

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)


class RayEngine:
    """Starts replicas as actors on the cluster this process is connected to."""

    def __init__(self) -> None:
        self._replicas: dict[str, RayReplica] = {}
        self._actor_names: dict[str, str] = {}  # replica id -> its actor's name

    async def start_replica(self, spec: ReplicaSpec) -> RayReplica:
        try:
            actor = _ReplicaActor.options(**actor_options(spec)).remote()
        except Exception as error:  # options Ray refuses (a bad resource, a bad runtime_env)
            raise ReplicaStartupError(
                f"Ray refused the actor for replica {spec.replica_id} (check the deployment's "
                f"ray_actor_options {spec.config.ray_actor_options}): {error}"
            ) from None
        replica = RayReplica(spec.replica_id, actor, spec)
        self._track(replica, replica_actor_name(spec.app_name, spec.replica_id))
        return replica

    def _track(self, replica: RayReplica, actor_name: str) -> None:
        self._replicas[replica.replica_id] = replica
        self._actor_names[replica.replica_id] = actor_name

        async def forget() -> None:
            await replica.wait_exit()
            self._replicas.pop(replica.replica_id, None)
            self._actor_names.pop(replica.replica_id, None)

        asyncio.get_running_loop().create_task(
            forget(), name=f"swell-ray-reap-{replica.replica_id}"
        )

    def adopt(self, app_name: str, replica_id: str, ready: ReadyInfo) -> RayReplica | None:
        """Take over the replica actor a previous controller started, if it still runs the same
        process (a blocking Ray call: at start, before anything serves from this loop)."""
        name = replica_actor_name(app_name, replica_id)
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
            answer: Any = ray.get(actor.pid.remote(), timeout=_ADOPT_DEADLINE_S)
            pid = int(answer or -1)
        except Exception as error:  # gone, or not answering
            logger.info("replica %s is not adopted: %s", replica_id, error)
            return None
        if pid != ready.pid:
            logger.info("replica %s now runs pid %s, not %s", replica_id, pid, ready.pid)
            with contextlib.suppress(Exception):
                ray.kill(actor, no_restart=True)
            return None
        replica = RayReplica.adopted(replica_id, actor, ready)
        self._track(replica, name)
        return replica

    def kill_strays(self) -> int:
        """Kill replica actors no replica record names (one a killed controller was still
        starting): they would hold their resources for ever. Returns how many."""
        return kill_named_actors(REPLICA_PREFIX, set(self._actor_names.values()))

    async def shutdown(self) -> None:
        """Kill whatever is left; the controller has already stopped replicas gracefully."""
        replicas = list(self._replicas.values())
        for replica in replicas:
            replica.kill()
        for replica in replicas:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replica.wait_exit(), _KILL_WAIT_S)
