"""The local engine: every replica is a subprocess of the controller's process.

Each replica leads its own process group, so stopping it also ends whatever it started (an
inference engine's workers). Exits are seen through a pidfd on the process itself, not
through its pipes, which a grandchild may still hold open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import struct
import subprocess
import sys

from swell._engines.base import ReadyInfo, ReplicaStartupError
from swell._engines.local_resources import DoesNotFit, Machine, ResourcePool, this_machine
from swell._procs import kill_group, process_start_time, same_process, wait_for_exit
from swell._spec import ReplicaSpec

_KILL_WAIT_S = 10.0


class _ProcessReplica:
    """What a started and an adopted replica share: a pid, its group, and its exit."""

    def __init__(self, replica_id: str, pid: int) -> None:
        self._replica_id = replica_id
        self._pid = pid
        self._exited = asyncio.Event()
        self.ready_info: ReadyInfo | None = None
        self._exit_watch = asyncio.get_running_loop().create_task(
            self._watch_exit(), name=f"swell-replica-exit-{replica_id}"
        )

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def pid(self) -> int | None:
        return self._pid

    async def _watch_exit(self) -> None:
        await wait_for_exit(self._pid)
        self._on_exit()
        kill_group(self._pid)  # the replica is gone: so are its engine's workers
        self._exited.set()

    def _on_exit(self) -> None:
        """Reap the process (where it is our child)."""

    def _signal(self, signum: int) -> None:
        if not self._exited.is_set():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._pid, signum)

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM (the replica drains), then SIGKILL to its whole group after ``timeout_s``."""
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._exited.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await asyncio.wait_for(self._exited.wait(), _KILL_WAIT_S)

    def kill(self) -> None:
        if not self._exited.is_set():
            kill_group(self._pid)


class LocalReplica(_ProcessReplica):
    """A replica subprocess: its events pipe, its lifeline (stdin) and its exit."""

    def __init__(self, spec: ReplicaSpec, process: subprocess.Popen[bytes], events_fd: int) -> None:
        self._spec = spec
        self._process = process
        self._events = os.fdopen(events_fd, "rb", buffering=0)
        self._ready: asyncio.Future[ReadyInfo] = asyncio.get_running_loop().create_future()
        super().__init__(spec.replica_id, process.pid)
        self._events_task = asyncio.get_running_loop().create_task(
            self._read_events(), name=f"swell-replica-events-{spec.replica_id}"
        )

    async def _read_events(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._events
        )
        try:
            while not self._ready.done():
                line = await reader.readline()
                if not line:
                    return
                self._on_event(json.loads(line))
        finally:
            transport.close()

    def _on_event(self, event: dict[str, object]) -> None:
        if event.get("event") == "ready":
            ready = ReadyInfo(
                self._spec.host,
                int(str(event["port"])),
                int(str(event["pid"])),
                _optional_int(event.get("data_port")),
                _optional_int(event.get("control_port")),
                process_start_time(self._pid),
                grpc_port=_optional_int(event.get("grpc_port")),
            )
            self.ready_info = ready
            self._ready.set_result(ready)
        elif event.get("event") == "failed":
            self._ready.set_exception(ReplicaStartupError(str(event["error"])))

    def _on_exit(self) -> None:
        self._process.poll()  # reap it: no zombie, and its status for wait_exit()
        self._events_task.cancel()
        self._close_lifeline()
        if not self._ready.done():
            self._ready.set_exception(
                ReplicaStartupError(
                    f"replica process {self._pid} exited with status "
                    f"{self._process.returncode} before it was ready"
                )
            )

    async def wait_ready(self) -> ReadyInfo:
        return await asyncio.shield(self._ready)

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return int(self._process.returncode if self._process.returncode is not None else -1)

    def kill(self) -> None:
        super().kill()
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()


class AdoptedReplica(_ProcessReplica):
    """A replica a previous controller started: not our child, identified by pid and start
    time."""

    def __init__(self, replica_id: str, ready: ReadyInfo) -> None:
        super().__init__(replica_id, ready.pid)
        self.ready_info = ready

    async def wait_ready(self) -> ReadyInfo:
        assert self.ready_info is not None
        return self.ready_info

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return -1  # not our child: its status is its parent's to read


def _optional_int(value: object) -> int | None:
    return None if value is None else int(str(value))


class LocalEngine:
    """Starts replicas as ``python -m swell._replica.main`` processes in their own session."""

    def __init__(self, machine: Machine | None = None) -> None:
        self._replicas: dict[str, _ProcessReplica] = {}
        # CPUs, memory and GPUs are reserved per replica from ray_actor_options, as Ray would.
        self._resources = ResourcePool(machine or this_machine())

    async def start_replica(self, spec: ReplicaSpec) -> LocalReplica:
        try:
            assignment = self._resources.reserve(spec.replica_id, spec.config.ray_actor_options)
        except DoesNotFit as error:
            raise ReplicaStartupError(str(error)) from None
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "swell._replica.main", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env={**os.environ, **spec.env_vars, **assignment.env()},
                cwd=spec.working_dir,
                # Own session and process group: a terminal's Ctrl-C reaches the controller,
                # which stops replicas in order, and a stop can end the replica's whole group.
                start_new_session=True,
            )
        except BaseException:
            self._resources.release(spec.replica_id)
            raise
        finally:
            os.close(write_fd)
        assert process.stdin is not None
        stdin = process.stdin
        payload = spec.dumps()

        def hand_over_spec() -> None:
            stdin.write(struct.pack("!Q", len(payload)) + payload)
            stdin.flush()

        replica = LocalReplica(spec, process, read_fd)
        self._track(replica)
        # A large spec can fill the pipe before the child reads it: write off the loop. If it
        # died at once, wait_ready() reports that.
        with contextlib.suppress(OSError):
            await asyncio.get_running_loop().run_in_executor(None, hand_over_spec)
        return replica

    def adopt(self, replica_id: str, ready: ReadyInfo) -> AdoptedReplica | None:
        """Take over a replica that outlived the previous controller, if it is that same process
        (pid and start time) and alive; never signal a process that merely reused the pid."""
        if not same_process(ready.pid, ready.start_time):
            return None
        replica = AdoptedReplica(replica_id, ready)
        self._track(replica)
        return replica

    def _track(self, replica: _ProcessReplica) -> None:
        self._replicas[replica.replica_id] = replica

        async def forget() -> None:
            await replica._exited.wait()
            self._replicas.pop(replica.replica_id, None)
            self._resources.release(replica.replica_id)

        asyncio.get_running_loop().create_task(
            forget(), name=f"swell-replica-reap-{replica.replica_id}"
        )

    async def shutdown(self) -> None:
        """Kill whatever is left; the controller has already stopped replicas gracefully."""
        for replica in list(self._replicas.values()):
            replica.kill()
        for replica in list(self._replicas.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replica._exited.wait(), _KILL_WAIT_S)
