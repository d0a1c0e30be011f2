"""The actor behind one replica on a Ray node: it supervises the replica's process there.

The replica runs exactly as with the local engine (``python -m swell._replica.main``: its own
process, main thread, uvloop, signals, process group), started by this actor on the node Ray
chose and bound to that node's IP. The actor holds the replica's resources (CPUs, GPUs and
their CUDA_VISIBLE_DEVICES, which the process inherits, as it inherits the runtime_env's
interpreter and variables) and its lifeline: if the actor dies, the replica reads EOF and
drains, and its process group is ended when the replica exits.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import cloudpickle

from swell._engines.base import ReadyInfo, ReplicaStartupError
from swell._engines.local import LocalEngine, LocalReplica
from swell._ray.cluster import this_node


class SwellReplica:
    """One replica's supervisor; the engine awaits ``start`` and ``wait_exit``."""

    def __init__(self) -> None:
        self._node_ip, self._node_id = this_node()
        self._engine = LocalEngine()
        self._replica: LocalReplica | None = None
        self._launched = asyncio.Event()

    async def start(self, spec_bytes: bytes) -> ReadyInfo | str:
        """Launch the replica; its ReadyInfo once it serves, or why it never will (text)."""
        try:
            spec = cloudpickle.loads(spec_bytes)
            # Ray reserved the actor's resources already (and set CUDA_VISIBLE_DEVICES, which
            # the process inherits): the local engine must not reserve them a second time.
            config = spec.config.model_copy(update={"ray_actor_options": {}})
            spec = replace(spec, host=self._node_ip, survive_controller=False, config=config)
            self._replica = await self._engine.start_replica(spec)
        except Exception as error:
            return f"could not launch the replica process on node {self._node_id}: {error!r}"
        finally:
            self._launched.set()
        try:
            ready = await self._replica.wait_ready()
        except ReplicaStartupError as error:
            return error.detail
        return replace(ready, node_id=self._node_id)

    async def pid(self) -> int | None:
        """The replica's process (an adopting controller checks it is the one it recorded)."""
        await self._launched.wait()
        return None if self._replica is None else self._replica.pid

    async def wait_exit(self) -> int:
        """Resolves with the replica's exit status (pending for as long as it runs)."""
        await self._launched.wait()
        if self._replica is None:
            return -1
        return await self._replica.wait_exit()

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM (the replica drains), then its whole group is killed after ``timeout_s``."""
        await self._launched.wait()
        if self._replica is not None:
            await self._replica.stop(timeout_s)
