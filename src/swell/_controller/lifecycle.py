"""One replica's life as the controller drives it: launch, join, watch, reconfigure, stop.

Every replica the controller starts is owned by one task from launch to stop: a failure at
any step stops that replica and is recorded (with backoff), a stop while it starts cancels
the launch, so nothing is left STARTING, half-joined or unwatched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from swell._controller import events as ev
from swell._controller.deployment_state import ReplicaState
from swell._controller.events import EventLog
from swell._controller.model import AppRuntime, DeploymentRuntime
from swell._controller.replica_client import ReplicaClient
from swell._engines.base import Engine, ReadyInfo, ReplicaRuntime, ReplicaStartupError
from swell._spec import ReplicaSpec

logger = logging.getLogger("swell.controller")

_REPLICA_HAPROXY_DEADLINE_S = 30.0


class IngressManager(Protocol):
    """What the controller needs from the ingress (HAProxy)."""

    async def set_route(
        self, app_name: str, route_prefix: str, max_queued_requests: int = -1
    ) -> None: ...
    async def remove_route(self, app_name: str) -> None: ...
    async def add_server(
        self,
        app_name: str,
        server_name: str,
        address: str,
        maxconn: int,
        check_port: int | None = None,
        grpc_port: int | None = None,
    ) -> None: ...
    async def drain_server(self, app_name: str, server_name: str) -> None: ...
    async def remove_server(self, app_name: str, server_name: str) -> None: ...
    async def sessions(self, app_name: str) -> dict[str, int]: ...


class _NoLongerWanted(Exception):
    """The replica was stopped (scaled down, replaced, deleted) while it was starting."""


class ReplicaLifecycle:
    """The I/O of replica lifecycles; the controller decides, this carries it out."""

    def __init__(
        self,
        engine: Engine,
        ingress: IngressManager,
        replicas: ReplicaClient,
        clock: Callable[[], float],
        wake: Callable[[], None],
        spawn: Callable[[Coroutine[Any, Any, Any], str], asyncio.Task[None]],
    ) -> None:
        self._engine = engine
        self._ingress = ingress
        self._replicas = replicas
        self._clock = clock
        self._wake = wake
        self._spawn = spawn
        self.events = EventLog()

    async def reconfigure(self, deployment: DeploymentRuntime, replica_id: str) -> None:
        """Hand a live replica its new user_config; one that rejects it is replaced."""
        record = deployment.state.replicas.get(replica_id)
        if record is None or record.control_address is None:
            return
        config = deployment.target.config
        ok, detail = await self._replicas.reconfigure(
            record.control_address, config.user_config, config.health_check_timeout_s
        )
        if not ok:
            record.replace = True
            deployment.state.last_error = f"reconfigure() failed on {replica_id}: {detail}"
            self._wake()

    @staticmethod
    def still_wanted(deployment: DeploymentRuntime, replica_id: str) -> bool:
        record = deployment.state.replicas.get(replica_id)
        return record is not None and record.state is ReplicaState.STARTING

    async def bring_up(
        self, app: AppRuntime, deployment: DeploymentRuntime, spec: ReplicaSpec
    ) -> None:
        """Launch, wait (bounded) for ready, bring its user_config up to date, join HAProxy,
        publish, watch. Any failure, or a stop meanwhile, undoes what was done."""
        replica_id = spec.replica_id
        runtime: ReplicaRuntime | None = None
        joined = False
        try:
            runtime = await self._engine.start_replica(spec)
            deployment.runtimes[replica_id] = runtime
            record = deployment.state.replicas.get(replica_id)
            if record is not None:
                record.pid = runtime.pid
            timeout = spec.config.startup_timeout_s
            try:
                ready = await asyncio.wait_for(runtime.wait_ready(), timeout)
            except TimeoutError:
                raise ReplicaStartupError(
                    f"replica {replica_id} did not become ready within {timeout}s "
                    "(startup_timeout_s); it was stopped"
                ) from None
            if not self.still_wanted(deployment, replica_id):
                raise _NoLongerWanted
            await self._catch_up_user_config(deployment, spec, ready)
            if deployment.target.is_ingress and app.in_haproxy:
                joined = True
                await self.join_haproxy(app, deployment, replica_id, ready)
            if not self.still_wanted(deployment, replica_id):
                raise _NoLongerWanted
            deployment.state.on_ready(
                replica_id, ready.address, ready.pid, self._clock(), ready.control_address
            )
            deployment.publish(replica_id, ready.data_address)
            self.events.record(
                ev.REPLICA_RUNNING, app.name, deployment.target.name, ready.address, replica_id
            )
            self._spawn(self.watch_exit(app, deployment, runtime), f"swell-watch-{replica_id}")
            logger.info(
                "replica %s of %s/%s is running", replica_id, app.name, spec.deployment_name
            )
        except asyncio.CancelledError:
            # Stopped while starting (the stop path cancels us): undo, and end normally.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._undo_bring_up(app, deployment, replica_id, runtime, joined)
            deployment.state.on_stopped(replica_id)
        except _NoLongerWanted:
            await self._undo_bring_up(app, deployment, replica_id, runtime, joined)
            deployment.state.on_stopped(replica_id)
        except Exception as error:
            detail = error.detail if isinstance(error, ReplicaStartupError) else repr(error)
            await self._undo_bring_up(app, deployment, replica_id, runtime, joined)
            if self.still_wanted(deployment, replica_id):
                deployment.state.on_start_failed(replica_id, detail, self._clock())
                logger.error("replica %s failed to start:\n%s", replica_id, detail)
                self.events.record(
                    ev.REPLICA_START_FAILED,
                    app.name,
                    deployment.target.name,
                    detail.strip().splitlines()[-1] if detail.strip() else detail,
                    replica_id,
                )
            else:
                deployment.state.on_stopped(replica_id)
        finally:
            deployment.starting.pop(replica_id, None)
            self._wake()

    async def _catch_up_user_config(
        self, deployment: DeploymentRuntime, spec: ReplicaSpec, ready: ReadyInfo
    ) -> None:
        """A user_config update that arrived while this replica started reaches it now."""
        current = deployment.target.config
        if (
            deployment.target.version != spec.version
            or current.user_config == spec.config.user_config
        ):
            return
        ok, detail = await self._replicas.reconfigure(
            ready.control_address, current.user_config, current.health_check_timeout_s
        )
        if not ok:
            raise ReplicaStartupError(f"reconfigure() with the new user_config failed: {detail}")

    async def join_haproxy(
        self, app: AppRuntime, deployment: DeploymentRuntime, replica_id: str, ready: ReadyInfo
    ) -> None:
        await asyncio.wait_for(
            self._ingress.add_server(
                app.name,
                replica_id,
                ready.address,
                deployment.target.config.max_ongoing_requests,
                ready.control_port,
                # Only replicas serving gRPC say so: ingresses without gRPC never see it.
                **({"grpc_port": ready.grpc_port} if ready.grpc_port is not None else {}),
            ),
            _REPLICA_HAPROXY_DEADLINE_S,
        )

    async def _undo_bring_up(
        self,
        app: AppRuntime,
        deployment: DeploymentRuntime,
        replica_id: str,
        runtime: ReplicaRuntime | None,
        joined: bool,
    ) -> None:
        """Leave no trace of a replica that will not serve: out of HAProxy, process stopped."""
        deployment.publish(replica_id, None)
        if joined:
            with contextlib.suppress(Exception):
                await self._ingress.remove_server(app.name, replica_id)
        if runtime is not None:
            with contextlib.suppress(Exception):
                await runtime.stop(deployment.target.config.graceful_shutdown_timeout_s)
        deployment.runtimes.pop(replica_id, None)

    async def watch_exit(
        self, app: AppRuntime, deployment: DeploymentRuntime, runtime: ReplicaRuntime
    ) -> None:
        status = await runtime.wait_exit()
        replica_id = runtime.replica_id
        record = deployment.state.replicas.get(replica_id)
        if record is None or record.state is ReplicaState.STOPPING:
            return
        logger.warning("replica %s exited unexpectedly with status %s", replica_id, status)
        self.events.record(
            ev.REPLICA_DIED, app.name, deployment.target.name, f"exit status {status}", replica_id
        )
        deployment.runtimes.pop(replica_id, None)
        deployment.publish(replica_id, None)
        deployment.state.on_died(
            replica_id, f"replica {replica_id} exited with status {status}", self._clock()
        )
        self._wake()
        if deployment.target.is_ingress and app.in_haproxy:
            with contextlib.suppress(Exception):
                await self._ingress.remove_server(app.name, replica_id)

    async def stop(self, app: AppRuntime, deployment: DeploymentRuntime, replica_id: str) -> None:
        """Drain in HAProxy, wait for in-flight requests (bounded), then stop the process.

        A replica still starting has its bring-up cancelled, which stops it.
        """
        config = deployment.target.config
        deployment.state.on_stopping(replica_id)
        deployment.publish(replica_id, None)
        starting = deployment.starting.get(replica_id)
        if starting is not None:
            starting.cancel()
            await asyncio.wait([starting])
            return
        runtime = deployment.runtimes.get(replica_id)
        logger.info("stopping replica %s of %s/%s", replica_id, app.name, deployment.target.name)
        if deployment.target.is_ingress and app.in_haproxy:
            with contextlib.suppress(Exception):
                await self._drain_in_haproxy(
                    app,
                    replica_id,
                    config.graceful_shutdown_timeout_s,
                    config.graceful_shutdown_wait_loop_s,
                )
            with contextlib.suppress(Exception):
                await self._ingress.remove_server(app.name, replica_id)
        if runtime is not None:
            await runtime.stop(config.graceful_shutdown_timeout_s)
        deployment.runtimes.pop(replica_id, None)
        deployment.state.on_stopped(replica_id)
        self.events.record(ev.REPLICA_STOPPED, app.name, deployment.target.name, "", replica_id)
        self._wake()

    async def _drain_in_haproxy(
        self, app: AppRuntime, replica_id: str, timeout_s: float, poll_s: float
    ) -> None:
        await self._ingress.drain_server(app.name, replica_id)
        deadline = self._clock() + timeout_s
        while self._clock() < deadline:
            sessions = await self._ingress.sessions(app.name)
            if sessions.get(replica_id, 0) == 0:
                return
            await asyncio.sleep(min(poll_s, max(0.0, deadline - self._clock())))

    async def check_health(
        self, deployment: DeploymentRuntime, replica_id: str, app_name: str = ""
    ) -> None:
        record = deployment.state.replicas.get(replica_id)
        if record is None or record.control_address is None:
            return
        ok, detail = await self._replicas.check_health(
            record.control_address, deployment.target.config.health_check_timeout_s
        )
        deployment.state.on_health_result(replica_id, ok, detail)
        if not ok:
            self.events.record(
                ev.HEALTH_CHECK_FAILED, app_name, deployment.target.name, detail, replica_id
            )
            self._wake()
