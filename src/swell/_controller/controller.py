"""The controller: compares what should run with what runs, and acts through two interfaces.

It is never on the request path. It starts and stops replicas through the engine, and adds,
drains and removes them in HAProxy through the ingress manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from swell._controller.autoscaler import Autoscaler
from swell._controller.deployment_state import DeploymentState, DeploymentStatus, ReplicaState
from swell._engines.base import Engine, ReadyInfo, ReplicaRuntime, ReplicaStartupError
from swell._protocol import (
    BACKEND_QUEUE,
    CLUSTER_TOKEN_HEADER,
    CONTROL_HEALTH_PATH,
    CONTROL_RECONFIGURE_PATH,
    CONTROL_STATS_PATH,
)
from swell._spec import CallableRef, ReplicaSpec
from swell.config import DeploymentConfig
from swell.exceptions import ConfigError

logger = logging.getLogger("swell.controller")

_TICK_S = 0.1


class IngressManager(Protocol):
    """What the controller needs from the ingress (HAProxy)."""

    async def set_route(self, app_name: str, route_prefix: str) -> None: ...
    async def remove_route(self, app_name: str) -> None: ...
    async def add_server(
        self, app_name: str, server_name: str, address: str, maxconn: int
    ) -> None: ...
    async def drain_server(self, app_name: str, server_name: str) -> None: ...
    async def remove_server(self, app_name: str, server_name: str) -> None: ...
    async def sessions(self, app_name: str) -> dict[str, int]: ...


AdoptReplica = Callable[[str, int, ReadyInfo], "ReplicaRuntime | None"]


@dataclass(frozen=True)
class DeploymentTarget:
    """One deployment as it should run: code, constructor arguments, options."""

    name: str
    ref: CallableRef
    init_args: bytes
    config: DeploymentConfig
    is_ingress: bool
    version: str
    env_vars: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None


@dataclass
class _Deployment:
    target: DeploymentTarget
    state: DeploymentState
    runtimes: dict[str, ReplicaRuntime] = field(default_factory=dict)
    # What routers see: replica id -> gRPC address, versioned so watchers can wait on it.
    replica_set: dict[str, str] = field(default_factory=dict)
    # Starts from the clock so a restarted controller never reuses a version a router knows.
    set_version: int = field(default_factory=lambda: time.time_ns() // 1000)
    set_changed: asyncio.Event = field(default_factory=asyncio.Event)
    autoscaler: Autoscaler | None = None
    metrics_due_at: float = 0.0
    metrics_in_flight: bool = False
    # Requests waiting for this deployment with no replica to take them (scale from zero):
    # the ingress's wake-up server and callers' routers report them.
    waiting: int = 0
    demand_until: float = 0.0

    def configure_autoscaling(self) -> None:
        policy = self.target.config.effective_autoscaling()
        if policy is None:
            self.autoscaler = None
        elif self.autoscaler is None or self.autoscaler.config != policy:
            self.autoscaler = Autoscaler(policy)

    def publish(self, replica_id: str, data_address: str | None) -> None:
        """Add (with an address) or remove (None) a replica from the routers' view."""
        if data_address is None:
            if self.replica_set.pop(replica_id, None) is None:
                return
        else:
            self.replica_set[replica_id] = data_address
        self.set_version += 1
        self.set_changed.set()
        self.set_changed = asyncio.Event()

    def publish_limits(self) -> None:
        """The queue limit changed: routers learn it through the same watch."""
        self.set_version += 1
        self.set_changed.set()
        self.set_changed = asyncio.Event()

    def replica_set_document(self) -> dict[str, Any]:
        return {
            "version": self.set_version,
            "replicas": dict(self.replica_set),
            "max_ongoing_requests": self.target.config.max_ongoing_requests,
            "max_queued_requests": self.target.config.max_queued_requests,
        }


@dataclass
class _App:
    name: str
    route_prefix: str | None
    deployments: dict[str, _Deployment]
    deployed_at: float


class Controller:
    """Owns the desired state of every application and drives replicas towards it."""

    def __init__(
        self,
        engine: Engine,
        ingress: IngressManager,
        sys_path: list[str],
        clock: Callable[[], float] = time.monotonic,
        cluster_token: str | None = None,
        survive_controller: bool = False,
    ) -> None:
        self.controller_url = ""  # where replicas' routers watch replica sets; set at start
        self._survive_controller = survive_controller
        self.checkpoint: Callable[[], None] | None = None
        self._engine = engine
        self._ingress = ingress
        self._sys_path = sys_path
        self._clock = clock
        self._apps: dict[str, _App] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._http = httpx.AsyncClient()
        self.cluster_token = cluster_token or secrets.token_hex(16)

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name="swell-controller-reconcile"
        )

    async def shutdown(self) -> None:
        """Stop every replica (in-flight requests finish), then forget everything."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        stops = []
        for app in self._apps.values():
            for deployment in app.deployments.values():
                for replica_id, runtime in list(deployment.runtimes.items()):
                    timeout = deployment.target.config.graceful_shutdown_timeout_s
                    deployment.state.on_stopping(replica_id)
                    stops.append(runtime.stop(timeout))
        await asyncio.gather(*stops, return_exceptions=True)
        for app in self._apps.values():
            for deployment in app.deployments.values():
                deployment.set_changed.set()  # answer pending watches now
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._apps.clear()
        await self._engine.shutdown()
        await self._http.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> None:
        """Every background task has a name and an owner, and its crash is logged."""

        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("controller task %s crashed", name)

        task = asyncio.get_running_loop().create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            try:
                self._reconcile()
                if self.checkpoint is not None:
                    self.checkpoint()
            except Exception:
                logger.exception("reconcile step failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), _TICK_S)

    # Desired state ------------------------------------------------------------------------

    async def deploy_app(
        self, name: str, route_prefix: str | None, targets: list[DeploymentTarget]
    ) -> None:
        """Set an application's desired state. Replicas start on the next tick."""
        for other in self._apps.values():
            if (
                other.name != name
                and route_prefix is not None
                and other.route_prefix == route_prefix
            ):
                raise ConfigError(
                    f"route_prefix {route_prefix!r} is already served by application "
                    f"'{other.name}'; choose another prefix or delete that application first."
                )
        existing = self._apps.get(name)
        if existing is not None and existing.route_prefix != route_prefix:
            # Moving an app means new HAProxy servers under a new backend: start it afresh.
            await self.delete_app(name)
            existing = None
        if existing is None:
            deployments = {t.name: self._new_deployment(t) for t in targets}
            self._apps[name] = _App(name, route_prefix, deployments, time.time())
            if route_prefix is not None:
                await self._ingress.set_route(name, route_prefix)
        else:
            self._update_app(existing, targets)
        self._wake.set()

    @staticmethod
    def _new_deployment(target: DeploymentTarget) -> _Deployment:
        state = DeploymentState(
            target.name, target.config.target_replicas(), target.config.health_check_period_s
        )
        state.set_version(target.version)
        deployment = _Deployment(target, state)
        deployment.configure_autoscaling()
        return deployment

    def _update_app(self, app: _App, targets: list[DeploymentTarget]) -> None:
        """Apply a new config to a running app, each change in the cheapest safe way.

        Same code version: replica count, autoscaling and queue limits change in place, and a
        new user_config reaches live replicas through reconfigure(). A new code version
        (code, args, runtime_env, ray_actor_options, max_ongoing_requests) rolls: new replicas
        start, join when healthy, and only then do old ones drain and stop.
        """
        wanted = {t.name for t in targets}
        for name in [n for n in app.deployments if n not in wanted]:
            removed = app.deployments.pop(name)
            for replica_id in list(removed.runtimes):
                self._spawn(
                    self._stop_replica(app, removed, replica_id), f"swell-stop-{replica_id}"
                )
        for target in targets:
            deployment = app.deployments.get(target.name)
            if deployment is None:
                app.deployments[target.name] = self._new_deployment(target)
                continue
            previous = deployment.target
            deployment.target = target
            deployment.configure_autoscaling()
            if deployment.autoscaler is None or previous.config.effective_autoscaling() is None:
                deployment.state.target = target.config.target_replicas()
            deployment.state.health_check_period_s = target.config.health_check_period_s
            deployment.state.set_version(target.version)
            if previous.version == target.version:
                if previous.config.user_config != target.config.user_config:
                    for replica_id, record in deployment.state.replicas.items():
                        if record.address is not None and record.version == target.version:
                            self._spawn(
                                self._reconfigure(deployment, replica_id, record.address),
                                f"swell-reconfigure-{replica_id}",
                            )
                if previous.config.max_queued_requests != target.config.max_queued_requests:
                    deployment.publish_limits()
        app.deployed_at = time.time()

    async def _reconfigure(self, deployment: _Deployment, replica_id: str, address: str) -> None:
        """Hand a live replica its new user_config; one that rejects it is replaced."""
        try:
            response = await self._http.post(
                f"http://{address}{CONTROL_RECONFIGURE_PATH}",
                content=pickle.dumps(deployment.target.config.user_config),
                headers={CLUSTER_TOKEN_HEADER: self.cluster_token},
                timeout=deployment.target.config.health_check_timeout_s,
            )
            ok, detail = response.status_code == 200, response.text
        except httpx.HTTPError as error:
            ok, detail = False, f"{type(error).__name__}: {error}"
        if not ok:
            record = deployment.state.replicas.get(replica_id)
            if record is not None:
                record.replace = True
            deployment.state.last_error = f"reconfigure() failed on {replica_id}: {detail}"
            self._wake.set()

    async def delete_app(self, name: str) -> None:
        """Drain and stop every replica of the app, then drop its route."""
        app = self._apps.pop(name, None)
        if app is None:
            return
        stops = [
            self._stop_replica(app, deployment, replica_id)
            for deployment in app.deployments.values()
            for replica_id in list(deployment.runtimes)
        ]
        await asyncio.gather(*stops, return_exceptions=True)
        if app.route_prefix is not None:
            await self._ingress.remove_route(name)

    # Checkpoint and recovery --------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        """Desired state plus the running replicas: what a restarted controller adopts."""
        apps = []
        for app in self._apps.values():
            deployments = []
            for deployment in app.deployments.values():
                replicas = [
                    {
                        "replica_id": r.replica_id,
                        "version": r.version,
                        "pid": r.pid,
                        "address": r.address,
                        "data_address": deployment.replica_set.get(r.replica_id),
                    }
                    for r in deployment.state.replicas.values()
                    if r.state is ReplicaState.RUNNING and r.pid is not None
                ]
                deployments.append(
                    {
                        "target": deployment.target,
                        "replicas_target": deployment.state.target,
                        "replicas": replicas,
                    }
                )
            apps.append(
                {
                    "name": app.name,
                    "route_prefix": app.route_prefix,
                    "deployed_at": app.deployed_at,
                    "deployments": deployments,
                }
            )
        return apps

    def restore(self, apps: list[dict[str, Any]], adopt: AdoptReplica) -> list[tuple[str, str]]:
        """Rebuild state from a snapshot, adopting the replicas that are still alive.

        Returns (app, replica id) of the replicas that died meanwhile, so their HAProxy
        servers can be removed.
        """
        now = self._clock()
        dead = []
        for saved in apps:
            deployments = {}
            for item in saved["deployments"]:
                target: DeploymentTarget = item["target"]
                deployment = self._new_deployment(target)
                deployment.state.target = item["replicas_target"]
                for replica in item["replicas"]:
                    host, _, port = replica["address"].rpartition(":")
                    data = replica["data_address"]
                    ready = ReadyInfo(
                        host,
                        int(port),
                        replica["pid"],
                        int(data.rpartition(":")[2]) if data else None,
                    )
                    runtime = adopt(replica["replica_id"], replica["pid"], ready)
                    if runtime is None:
                        dead.append((saved["name"], replica["replica_id"]))
                        continue
                    deployment.state.on_started(replica["replica_id"], now, replica["pid"])
                    deployment.state.replicas[replica["replica_id"]].version = replica["version"]
                    deployment.state.on_ready(replica["replica_id"], ready.address, ready.pid, now)
                    deployment.runtimes[replica["replica_id"]] = runtime
                    if ready.data_address is not None:
                        deployment.publish(replica["replica_id"], ready.data_address)
                deployments[target.name] = deployment
            app = _App(saved["name"], saved["route_prefix"], deployments, saved["deployed_at"])
            self._apps[app.name] = app
            for deployment in deployments.values():
                for runtime in deployment.runtimes.values():
                    self._spawn(
                        self._watch_exit(app, deployment, runtime),
                        f"swell-watch-{runtime.replica_id}",
                    )
        self._wake.set()
        return dead

    # The reconcile step -------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = self._clock()
        for app in self._apps.values():
            for deployment in app.deployments.values():
                plan = deployment.state.plan(now)
                for _ in range(plan.start):
                    self._start_replica(app, deployment)
                for replica_id in plan.stop:
                    deployment.state.on_stopping(replica_id)
                    self._spawn(
                        self._stop_replica(app, deployment, replica_id),
                        f"swell-stop-{replica_id}",
                    )
                for replica_id in plan.check_health:
                    deployment.state.on_health_check_started(replica_id, now)
                    self._spawn(
                        self._check_health(deployment, replica_id), f"swell-health-{replica_id}"
                    )
                if deployment.autoscaler is not None and self._metrics_due(deployment, now):
                    deployment.metrics_in_flight = True
                    self._spawn(
                        self._autoscale(app, deployment),
                        f"swell-autoscale-{deployment.target.name}",
                    )

    def _start_replica(self, app: _App, deployment: _Deployment) -> None:
        target = deployment.target
        replica_id = f"{target.name}-{secrets.token_hex(4)}"
        spec = ReplicaSpec(
            replica_id=replica_id,
            app_name=app.name,
            deployment_name=target.name,
            route_prefix=app.route_prefix if target.is_ingress else None,
            deployment_ref=target.ref,
            init_args=target.init_args,
            config=target.config,
            version=target.version,
            sys_path=[target.working_dir, *self._sys_path]
            if target.working_dir
            else self._sys_path,
            cluster_token=self.cluster_token,
            controller_url=self.controller_url,
            survive_controller=self._survive_controller,
            env_vars=target.env_vars,
            working_dir=target.working_dir,
        )
        deployment.state.on_started(replica_id, self._clock())
        self._spawn(self._bring_up(app, deployment, spec), f"swell-start-{replica_id}")

    async def _bring_up(self, app: _App, deployment: _Deployment, spec: ReplicaSpec) -> None:
        replica_id = spec.replica_id
        try:
            runtime = await self._engine.start_replica(spec)
        except Exception as error:
            deployment.state.on_start_failed(replica_id, f"could not start: {error}", self._clock())
            return
        deployment.runtimes[replica_id] = runtime
        record = deployment.state.replicas.get(replica_id)
        if record is not None:
            record.pid = runtime.pid
        try:
            ready = await runtime.wait_ready()
        except ReplicaStartupError as error:
            deployment.runtimes.pop(replica_id, None)
            if self._still_wanted(deployment, replica_id):
                deployment.state.on_start_failed(replica_id, error.detail, self._clock())
                logger.error("replica %s failed to start:\n%s", replica_id, error.detail)
            self._wake.set()
            return
        if not self._still_wanted(deployment, replica_id):
            # Scaled down or deleted while it was starting: it never joins HAProxy.
            deployment.runtimes.pop(replica_id, None)
            await runtime.stop(deployment.target.config.graceful_shutdown_timeout_s)
            deployment.state.on_stopped(replica_id)
            return
        if deployment.target.is_ingress and app.route_prefix is not None:
            await self._ingress.add_server(
                app.name, replica_id, ready.address, deployment.target.config.max_ongoing_requests
            )
        deployment.state.on_ready(replica_id, ready.address, ready.pid, self._clock())
        deployment.publish(replica_id, ready.data_address)
        self._spawn(self._watch_exit(app, deployment, runtime), f"swell-watch-{replica_id}")

    @staticmethod
    def _still_wanted(deployment: _Deployment, replica_id: str) -> bool:
        record = deployment.state.replicas.get(replica_id)
        return record is not None and record.state is ReplicaState.STARTING

    async def _watch_exit(
        self, app: _App, deployment: _Deployment, runtime: ReplicaRuntime
    ) -> None:
        status = await runtime.wait_exit()
        replica_id = runtime.replica_id
        record = deployment.state.replicas.get(replica_id)
        if record is None or record.state is ReplicaState.STOPPING:
            return
        logger.warning("replica %s exited unexpectedly with status %s", replica_id, status)
        deployment.runtimes.pop(replica_id, None)
        deployment.publish(replica_id, None)
        deployment.state.on_died(replica_id, f"replica {replica_id} exited with status {status}")
        if deployment.target.is_ingress and app.route_prefix is not None:
            await self._ingress.remove_server(app.name, replica_id)
        self._wake.set()

    async def _stop_replica(self, app: _App, deployment: _Deployment, replica_id: str) -> None:
        """Drain in HAProxy, wait for in-flight requests (bounded), then stop the process."""
        config = deployment.target.config
        deployment.state.on_stopping(replica_id)
        deployment.publish(replica_id, None)
        runtime = deployment.runtimes.get(replica_id)
        in_ingress = deployment.target.is_ingress and app.route_prefix is not None
        if in_ingress:
            with contextlib.suppress(Exception):
                await self._ingress.drain_server(app.name, replica_id)
                deadline = self._clock() + config.graceful_shutdown_timeout_s
                while self._clock() < deadline:
                    sessions = await self._ingress.sessions(app.name)
                    if sessions.get(replica_id, 0) == 0:
                        break
                    await asyncio.sleep(config.graceful_shutdown_wait_loop_s)
            with contextlib.suppress(Exception):
                await self._ingress.remove_server(app.name, replica_id)
        if runtime is not None:
            await runtime.stop(config.graceful_shutdown_timeout_s)
        deployment.runtimes.pop(replica_id, None)
        deployment.state.on_stopped(replica_id)
        self._wake.set()

    @staticmethod
    def _metrics_due(deployment: _Deployment, now: float) -> bool:
        if deployment.metrics_in_flight:
            return False
        # Waiting requests with nothing running are acted on at once, not on the interval.
        starved = deployment.state.target == 0 and deployment.waiting > 0
        return starved or now >= deployment.metrics_due_at

    async def _autoscale(self, app: _App, deployment: _Deployment) -> None:
        """Collect each replica's load, then let the autoscaler set the target."""
        autoscaler = deployment.autoscaler
        assert autoscaler is not None
        try:
            now = self._clock()
            metrics = autoscaler.metrics
            running = {
                replica_id: record.address
                for replica_id, record in deployment.state.replicas.items()
                if record.state is ReplicaState.RUNNING and record.address is not None
            }
            loads = await asyncio.gather(
                *(self._replica_load(address) for address in running.values())
            )
            for replica_id, load in zip(running, loads, strict=True):
                if load is not None:
                    metrics.record(replica_id, now, load)
            for replica_id in list(metrics.replica_ids()):
                if replica_id not in running:
                    metrics.forget(replica_id)
            queued = 0
            if deployment.target.is_ingress and app.route_prefix is not None:
                with contextlib.suppress(Exception):
                    queued = (await self._ingress.sessions(app.name)).get(BACKEND_QUEUE, 0)
            waiting = deployment.waiting + (1 if self._clock() < deployment.demand_until else 0)
            target = autoscaler.decide(
                now, deployment.state.target, metrics.total_load(now) + queued, waiting
            )
            if target != deployment.state.target:
                logger.info(
                    "autoscaling %s from %d to %d replicas",
                    deployment.target.name,
                    deployment.state.target,
                    target,
                )
                deployment.state.target = target
                self._wake.set()
        finally:
            deployment.metrics_in_flight = False
            deployment.metrics_due_at = self._clock() + autoscaler.config.metrics_interval_s

    async def _replica_load(self, address: str) -> int | None:
        try:
            response = await self._http.get(f"http://{address}{CONTROL_STATS_PATH}", timeout=2.0)
            return int(response.json()["load"])
        except (httpx.HTTPError, ValueError, KeyError):
            return None

    def app_for_path(self, path: str) -> str | None:
        """The app whose route prefix is the longest one matching ``path``."""
        best: tuple[int, str] | None = None
        for app in self._apps.values():
            prefix = app.route_prefix
            if prefix is None:
                continue
            matches = prefix == "/" or path == prefix or path.startswith(prefix + "/")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), app.name)
        return None if best is None else best[1]

    def _ingress_of(self, app_name: str) -> _Deployment | None:
        app = self._apps.get(app_name)
        if app is None:
            return None
        return next((d for d in app.deployments.values() if d.target.is_ingress), None)

    def note_waiting(self, app_name: str, delta: int) -> None:
        deployment = self._ingress_of(app_name)
        if deployment is not None:
            deployment.waiting = max(0, deployment.waiting + delta)
            self._wake.set()

    async def wait_for_ingress_replica(self, app_name: str, timeout_s: float) -> str | None:
        """The HTTP address of a running ingress replica, waiting up to ``timeout_s``."""
        deadline = self._clock() + timeout_s
        while True:
            deployment = self._ingress_of(app_name)
            if deployment is None:
                return None
            for record in deployment.state.replicas.values():
                if record.state is ReplicaState.RUNNING and record.address is not None:
                    return record.address
            remaining = deadline - self._clock()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deployment.set_changed.wait(), remaining)

    def note_demand(self, app_name: str, deployment_name: str, hold_s: float = 2.0) -> bool:
        """A caller is waiting for a deployment with no replica: scale it from zero."""
        app = self._apps.get(app_name)
        deployment = app.deployments.get(deployment_name) if app else None
        if deployment is None:
            return False
        deployment.demand_until = self._clock() + hold_s
        deployment.metrics_due_at = 0.0
        self._wake.set()
        return True

    async def _check_health(self, deployment: _Deployment, replica_id: str) -> None:
        record = deployment.state.replicas.get(replica_id)
        if record is None or record.address is None:
            return
        timeout = deployment.target.config.health_check_timeout_s
        try:
            response = await self._http.get(
                f"http://{record.address}{CONTROL_HEALTH_PATH}", timeout=timeout
            )
            ok, detail = response.status_code == 200, response.text
        except httpx.HTTPError as error:
            ok, detail = False, f"{type(error).__name__}: {error}"
        deployment.state.on_health_result(replica_id, ok, detail)
        if not ok:
            self._wake.set()

    async def watch_replica_set(
        self, app_name: str, deployment_name: str, known_version: int, wait_s: float
    ) -> dict[str, Any] | None:
        """The deployment's replica set once its version differs from ``known_version``.

        Waits at most ``wait_s``; None if the deployment does not exist (yet).
        """
        app = self._apps.get(app_name)
        deployment = app.deployments.get(deployment_name) if app else None
        if deployment is None:
            return None
        if deployment.set_version == known_version:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(deployment.set_changed.wait(), wait_s)
        return deployment.replica_set_document()

    def app_names(self) -> list[str]:
        return list(self._apps)

    def ingress_deployment(self, app_name: str) -> str | None:
        app = self._apps.get(app_name)
        if app is None:
            return None
        return next((d.target.name for d in app.deployments.values() if d.target.is_ingress), None)

    # Observed state -----------------------------------------------------------------------

    def app_statuses(self) -> dict[str, DeploymentStatus]:
        """The worst deployment status of each application."""
        order = [
            DeploymentStatus.DEPLOY_FAILED,
            DeploymentStatus.UNHEALTHY,
            DeploymentStatus.DEPLOYING,
            DeploymentStatus.UPDATING,
            DeploymentStatus.HEALTHY,
        ]
        result = {}
        for app in self._apps.values():
            statuses = [d.state.status()[0] for d in app.deployments.values()]
            result[app.name] = min(statuses, key=order.index)
        return result

    def status(self) -> dict[str, Any]:
        """Applications, deployments and replicas, shaped like Ray Serve's REST API."""
        app_status_names = {
            DeploymentStatus.HEALTHY: "RUNNING",
            DeploymentStatus.DEPLOYING: "DEPLOYING",
            DeploymentStatus.UPDATING: "DEPLOYING",
            DeploymentStatus.UNHEALTHY: "UNHEALTHY",
            DeploymentStatus.DEPLOY_FAILED: "DEPLOY_FAILED",
        }
        app_statuses = self.app_statuses()
        applications: dict[str, Any] = {}
        for app in self._apps.values():
            deployments: dict[str, Any] = {}
            messages = []
            for name, deployment in app.deployments.items():
                status, message = deployment.state.status()
                if message and status is not DeploymentStatus.HEALTHY:
                    messages.append(f"Deployment '{name}': {message}")
                deployments[name] = {
                    "name": name,
                    "status": status.value,
                    "message": message if status is not DeploymentStatus.HEALTHY else "",
                    "target_replicas": deployment.state.target,
                    "replica_states": deployment.state.replica_counts(),
                    "deployment_config": deployment.target.config.model_dump(mode="json"),
                    "replicas": [
                        {
                            "replica_id": r.replica_id,
                            "state": r.state.value,
                            "pid": r.pid,
                            "address": r.address,
                            "data_address": deployment.replica_set.get(r.replica_id),
                        }
                        for r in deployment.state.replicas.values()
                    ],
                }
            applications[app.name] = {
                "name": app.name,
                "route_prefix": app.route_prefix,
                "status": app_status_names[app_statuses[app.name]],
                "message": "\n".join(messages),
                "last_deployed_time_s": app.deployed_at,
                "deployments": deployments,
            }
        return {"controller_info": {"pid": os.getpid()}, "applications": applications}
