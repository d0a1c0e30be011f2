"""The local engine: every replica is a subprocess of the controller's process."""

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
from swell._procs import pid_alive
from swell._spec import ReplicaSpec

_EXIT_POLL_S = 0.05
_ADOPTED_POLL_S = 0.2


class LocalReplica:
    """A replica subprocess: its events pipe, its lifeline (stdin) and its exit."""

    def __init__(self, spec: ReplicaSpec, process: subprocess.Popen[bytes], events_fd: int) -> None:
        self._spec = spec
        self._process = process
        self._events = os.fdopen(events_fd, "rb", buffering=0)
        self._ready: asyncio.Future[ReadyInfo] = asyncio.get_running_loop().create_future()
        self._exited = asyncio.Event()
        self._watcher = asyncio.create_task(
            self._watch(), name=f"swell-replica-watch-{spec.replica_id}"
        )

    @property
    def replica_id(self) -> str:
        return self._spec.replica_id

    @property
    def pid(self) -> int | None:
        return self._process.pid

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        transport, _ = await loop.connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(reader), self._events
        )
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                event = json.loads(line)
                if self._ready.done():
                    continue
                if event.get("event") == "ready":
                    self._ready.set_result(
                        ReadyInfo(
                            self._spec.host,
                            int(event["port"]),
                            int(event["pid"]),
                            event.get("data_port"),
                        )
                    )
                elif event.get("event") == "failed":
                    self._ready.set_exception(ReplicaStartupError(str(event["error"])))
        finally:
            transport.close()
        # The pipe closes when the process exits; reap it without blocking the loop.
        while self._process.poll() is None:
            await asyncio.sleep(_EXIT_POLL_S)
        if not self._ready.done():
            self._ready.set_exception(
                ReplicaStartupError(
                    f"replica process {self._process.pid} exited with status "
                    f"{self._process.returncode} before it was ready"
                )
            )
        self._exited.set()

    async def wait_ready(self) -> ReadyInfo:
        return await asyncio.shield(self._ready)

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return int(self._process.returncode)

    async def stop(self, timeout_s: float) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self._exited.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await asyncio.wait_for(self._exited.wait(), 10.0)

    def kill(self) -> None:
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
        self._close_lifeline()

    def _close_lifeline(self) -> None:
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(OSError):
                self._process.stdin.close()


class AdoptedReplica:
    """A replica a previous controller started: not our child, so watched by its pid."""

    def __init__(self, replica_id: str, pid: int, ready: ReadyInfo) -> None:
        self._replica_id = replica_id
        self._pid = pid
        self._ready = ready
        self._exited = asyncio.Event()
        self._watcher = asyncio.get_running_loop().create_task(
            self._watch(), name=f"swell-adopted-watch-{replica_id}"
        )

    @property
    def replica_id(self) -> str:
        return self._replica_id

    @property
    def pid(self) -> int | None:
        return self._pid

    def alive(self) -> bool:
        return pid_alive(self._pid)

    async def _watch(self) -> None:
        while self.alive():
            await asyncio.sleep(_ADOPTED_POLL_S)
        self._exited.set()

    async def wait_ready(self) -> ReadyInfo:
        return self._ready

    async def wait_exit(self) -> int:
        await self._exited.wait()
        return -1  # not our child: its status is its parent's to read

    async def stop(self, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self._exited.wait(), timeout_s)
        except TimeoutError:
            self.kill()
            await asyncio.wait_for(self._exited.wait(), 10.0)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)


class LocalEngine:
    """Starts replicas as ``python -m swell._replica.main`` processes in their own session."""

    def __init__(self) -> None:
        self._replicas: dict[str, LocalReplica | AdoptedReplica] = {}

    async def start_replica(self, spec: ReplicaSpec) -> LocalReplica:
        read_fd, write_fd = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "swell._replica.main", str(write_fd)],
                stdin=subprocess.PIPE,
                pass_fds=(write_fd,),
                env={**os.environ, **spec.env_vars},
                cwd=spec.working_dir,
                # Own session: a terminal's Ctrl-C reaches the controller, which stops
                # replicas in order, instead of every process at once.
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
        assert process.stdin is not None
        stdin = process.stdin
        payload = spec.dumps()

        def hand_over_spec() -> None:
            stdin.write(struct.pack("!Q", len(payload)) + payload)
            stdin.flush()

        # A large spec can fill the pipe before the child reads it: write off the loop.
        await asyncio.get_running_loop().run_in_executor(None, hand_over_spec)
        replica = LocalReplica(spec, process, read_fd)
        self._replicas[spec.replica_id] = replica
        asyncio.get_running_loop().create_task(
            self._forget_on_exit(replica), name=f"swell-replica-reap-{spec.replica_id}"
        )
        return replica

    def adopt(self, replica_id: str, pid: int, ready: ReadyInfo) -> AdoptedReplica | None:
        """Take over a replica that outlived the previous controller, if it is alive."""
        replica = AdoptedReplica(replica_id, pid, ready)
        if not replica.alive():
            replica._watcher.cancel()
            return None
        self._replicas[replica_id] = replica
        asyncio.get_running_loop().create_task(
            self._forget_on_exit(replica), name=f"swell-replica-reap-{replica_id}"
        )
        return replica

    async def _forget_on_exit(self, replica: LocalReplica | AdoptedReplica) -> None:
        await replica.wait_exit()
        self._replicas.pop(replica.replica_id, None)

    async def shutdown(self) -> None:
        """Kill whatever is left; the controller has already stopped replicas gracefully."""
        for replica in list(self._replicas.values()):
            replica.kill()
        for replica in list(self._replicas.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(replica.wait_exit(), 10.0)
