"""The controller: compares what should run with what runs, and acts through two interfaces.

It is never on the request path. It keeps each application's target apart from what runs,
and each tick asks every deployment's pure state machine what to do; ``lifecycle.py`` carries
out the replica I/O (engine, HAProxy, control calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from swell._cluster_tls import ClusterTLS
from swell._controller import events as ev
from swell._controller import snapshot as snapshots
from swell._controller.autoscaling import autoscale, metrics_due
from swell._controller.deployment_state import ReplicaState
from swell._controller.lifecycle import IngressManager, ReplicaLifecycle
from swell._controller.metrics_view import controller_snapshots, deploy_duration_family
from swell._controller.model import AppRuntime, DeploymentRuntime, DeploymentTarget
from swell._controller.replica_client import ReplicaClient
from swell._controller.status_view import app_status, applications_document
from swell._engines.base import Engine, ReadyInfo
from swell._metrics.core import Snapshot, family_snapshot
from swell._spec import ReplicaSpec
from swell._tasks import TaskOwner
from swell.config import gRPCOptions
from swell.exceptions import ConfigError

logger = logging.getLogger("swell.controller")

_TICK_S = 0.1


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
        max_request_body_bytes: int | None = None,
        logs_dir: str | None = None,
        replica_client: ReplicaClient | None = None,
        grpc_options: gRPCOptions | None = None,
        tls: ClusterTLS | None = None,
    ) -> None:
        self.controller_url = ""  # where replicas' routers watch replica sets; set at start
        self._survive_controller = survive_controller
        self._max_request_body_bytes = max_request_body_bytes
        self._grpc = grpc_options if grpc_options is not None and grpc_options.enabled else None
        self.logs_dir = logs_dir
        self.checkpoint: Callable[[], None] | None = None
        self._engine = engine
        self._ingress = ingress
        self._sys_path = sys_path
        self._clock = clock
        self._apps: dict[str, AppRuntime] = {}
        self._owner = TaskOwner(logger, "controller")
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = False
        self.cluster_token = cluster_token or secrets.token_hex(16)
        self.tls = tls
        self._replicas = replica_client or ReplicaClient(self.cluster_token, tls)
        self._lifecycle = ReplicaLifecycle(
            engine, ingress, self._replicas, clock, self._wake.set, self._spawn
        )
        # Recent events (the status page) and their counts (the metrics).
        self.events = self._lifecycle.events
        self._deploy_durations = deploy_duration_family()
        # Apps deploying: name -> when the deploy was asked for (clock), until RUNNING.
        self._deploying: dict[str, float] = {}

    # Lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop_task = asyncio.get_running_loop().create_task(
            self._run(), name="swell-controller-reconcile"
        )

    async def shutdown(self) -> None:
        """Stop every replica (in-flight requests finish), then forget everything."""
        self._stopping = True
        if self._loop_task is not None:
            # A flag as well as cancel(): Python 3.11's wait_for() swallows a cancellation
            # that arrives as the tick's wake-up completes, and the loop would run on.
            self._wake.set()
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        stops = []
        for app in self._apps.values():
            for deployment in app.deployments.values():
                for replica_id in list(deployment.state.replicas):
                    deployment.state.on_stopping(replica_id)
                for task in deployment.starting.values():
                    task.cancel()
                for runtime in list(deployment.runtimes.values()):
                    stops.append(runtime.stop(deployment.target.config.graceful_shutdown_timeout_s))
        await asyncio.gather(*stops, return_exceptions=True)
        for app in self._apps.values():
            for deployment in app.deployments.values():
                deployment.set_changed.set()  # answer pending watches now
        await self._owner.cancel_all()
        self._apps.clear()
        await self._engine.shutdown()
        await self._replicas.aclose()

    def _spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[None]:
        """Background work is named, owned (cancelled at stop) and logged if it crashes."""
        return self._owner.spawn(coro, name)

    async def _run(self) -> None:
        while not self._stopping:
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
        self._check_route_free(name, route_prefix)
        self.events.record(ev.DEPLOY_REQUESTED, name, message=f"route_prefix {route_prefix}")
        requested = self._clock()
        existing = self._apps.get(name)
        if existing is not None and existing.deleting:
            await existing.deleted.wait()
            existing = None
        if existing is None:
            deployments = {t.name: DeploymentRuntime.create(t) for t in targets}
            app = AppRuntime(name, route_prefix, deployments, time.time())
            if route_prefix is not None:
                # Raises before any change.
                await self._ingress.set_route(name, route_prefix, _queue_limit(targets))
            self._apps[name] = app
        else:
            if existing.route_prefix != route_prefix:
                await self._move_route(existing, route_prefix, _queue_limit(targets))
            elif route_prefix is not None and _queue_limit(targets) != _app_queue_limit(existing):
                await self._ingress.set_route(name, route_prefix, _queue_limit(targets))
            self._update_app(existing, targets)
        self._deploying[name] = requested
        self._wake.set()

    def _check_route_free(self, name: str, route_prefix: str | None) -> None:
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

    async def _move_route(
        self, app: AppRuntime, route_prefix: str | None, queue_limit: int
    ) -> None:
        """A new route prefix for a running app: a hitless route change, no replica restarts
        (replicas learn the prefix from each request's header)."""
        if route_prefix is None:
            await self._ingress.remove_route(app.name)
            app.route_prefix = None
            return
        had_route = app.in_haproxy
        await self._ingress.set_route(app.name, route_prefix, queue_limit)
        app.route_prefix = route_prefix
        ingress = app.ingress()
        if had_route or ingress is None:
            return
        for record in ingress.state.replicas.values():
            runtime = ingress.runtimes.get(record.replica_id)
            ready = getattr(runtime, "ready_info", None)
            if record.state is ReplicaState.RUNNING and isinstance(ready, ReadyInfo):
                await self._lifecycle.join_haproxy(app, ingress, record.replica_id, ready)

    def _update_app(self, app: AppRuntime, targets: list[DeploymentTarget]) -> None:
        """Apply a new config to a running app, each change in the cheapest safe way.

        Same code version: replica count, autoscaling and queue limits change in place, and a
        new user_config reaches live replicas through reconfigure() (and starting ones before
        they join). A new code version (code, args, runtime_env, ray_actor_options,
        max_ongoing_requests) rolls: new replicas start, join when healthy, and only then do
        old ones drain and stop.
        """
        wanted = {t.name for t in targets}
        for name in [n for n in app.deployments if n not in wanted]:
            removed = app.deployments.pop(name)
            for replica_id in self._owned_replicas(removed):
                removed.state.on_stopping(replica_id)
                self._spawn(
                    self._lifecycle.stop(app, removed, replica_id), f"swell-stop-{replica_id}"
                )
        for target in targets:
            deployment = app.deployments.get(target.name)
            if deployment is None:
                app.deployments[target.name] = DeploymentRuntime.create(target)
                continue
            previous = deployment.target
            deployment.target = target
            deployment.configure_autoscaling()
            if deployment.autoscaler is None or previous.config.effective_autoscaling() is None:
                deployment.state.target = target.config.target_replicas()
            deployment.state.health_check_period_s = target.config.health_check_period_s
            deployment.state.set_version(target.version)
            if previous.version != target.version:
                continue
            if previous.config.user_config != target.config.user_config:
                for replica_id, record in deployment.state.replicas.items():
                    if record.state is ReplicaState.RUNNING and record.version == target.version:
                        self._spawn(
                            self._lifecycle.reconfigure(deployment, replica_id),
                            f"swell-reconfigure-{replica_id}",
                        )
            if previous.config.max_queued_requests != target.config.max_queued_requests:
                deployment.publish_limits()
        app.deployed_at = time.time()

    @staticmethod
    def _owned_replicas(deployment: DeploymentRuntime) -> list[str]:
        return list({*deployment.runtimes, *deployment.starting, *deployment.state.replicas})

    async def delete_app(self, name: str) -> None:
        """Drain and stop every replica of the app (starting ones too), then drop its route."""
        app = self._apps.get(name)
        if app is None:
            return
        if app.deleting:
            await app.deleted.wait()
            return
        app.deleting = True
        try:
            stops = []
            for deployment in app.deployments.values():
                for replica_id in self._owned_replicas(deployment):
                    deployment.state.on_stopping(replica_id)
                    stops.append(self._lifecycle.stop(app, deployment, replica_id))
            await asyncio.gather(*stops, return_exceptions=True)
            if app.route_prefix is not None:
                with contextlib.suppress(Exception):
                    await self._ingress.remove_route(name)
        finally:
            if self._apps.get(name) is app:
                del self._apps[name]
                self.events.record(ev.APP_DELETED, name)
            app.deleted.set()
            for deployment in app.deployments.values():
                deployment.set_changed.set()

    # Checkpoint and recovery --------------------------------------------------------------

    def snapshot(self) -> list[dict[str, Any]]:
        return snapshots.take(self._apps.values())

    def restore(
        self, saved_apps: list[dict[str, Any]], adopt: snapshots.AdoptReplica
    ) -> list[tuple[str, str]]:
        """Rebuild state from a snapshot, adopting the replicas that are still alive.

        Returns (app, replica id) of the replicas that are gone, so their HAProxy servers can
        be removed.
        """
        apps, gone = snapshots.restore(saved_apps, adopt, self._clock())
        for app in apps:
            self._apps[app.name] = app
            for deployment in app.deployments.values():
                for runtime in deployment.runtimes.values():
                    self._spawn(
                        self._lifecycle.watch_exit(app, deployment, runtime),
                        f"swell-watch-{runtime.replica_id}",
                    )
        self._wake.set()
        return gone

    def replica_ids(self) -> set[tuple[str, str]]:
        """(app, replica id) of every replica this controller has a runtime for."""
        return {
            (app.name, replica_id)
            for app in self._apps.values()
            for deployment in app.deployments.values()
            for replica_id in deployment.runtimes
        }

    async def rejoin_haproxy(self) -> None:
        """Add every running ingress replica to a freshly started HAProxy (after adoption)."""
        for app in self._apps.values():
            ingress = app.ingress()
            if ingress is None or not app.in_haproxy:
                continue
            for replica_id, runtime in ingress.runtimes.items():
                ready = getattr(runtime, "ready_info", None)
                if isinstance(ready, ReadyInfo):
                    await self._lifecycle.join_haproxy(app, ingress, replica_id, ready)

    # The reconcile step -------------------------------------------------------------------

    def _reconcile(self) -> None:
        now = self._clock()
        self._note_deploys_done(now)
        for app in list(self._apps.values()):
            if app.deleting:
                continue
            for deployment in app.deployments.values():
                plan = deployment.state.plan(now)
                for _ in range(plan.start):
                    self._start_replica(app, deployment)
                for replica_id in plan.stop:
                    deployment.state.on_stopping(replica_id)
                    self._spawn(
                        self._lifecycle.stop(app, deployment, replica_id),
                        f"swell-stop-{replica_id}",
                    )
                for replica_id in plan.check_health:
                    deployment.state.on_health_check_started(replica_id, now)
                    self._spawn(
                        self._lifecycle.check_health(deployment, replica_id, app.name),
                        f"swell-health-{replica_id}",
                    )
                if metrics_due(deployment, now):
                    deployment.metrics_in_flight = True
                    self._spawn(
                        self._autoscale(app, deployment),
                        f"swell-autoscale-{deployment.target.name}",
                    )

    async def _autoscale(self, app: AppRuntime, deployment: DeploymentRuntime) -> None:
        before = deployment.state.target
        if await autoscale(app, deployment, self._replicas, self._ingress, self._clock):
            self.events.record(
                ev.AUTOSCALED,
                app.name,
                deployment.target.name,
                f"target replicas {before} -> {deployment.state.target}",
            )
            self._wake.set()

    def _note_deploys_done(self, now: float) -> None:
        """A deploy ends when its app is RUNNING (or DEPLOY_FAILED): time it, log it."""
        for name, started in list(self._deploying.items()):
            app = self._apps.get(name)
            status = app_status(app) if app is not None else "DELETED"
            if status == "DEPLOYING":
                continue
            del self._deploying[name]
            if status == "RUNNING":
                self._deploy_durations.observe((name,), now - started)
                self.events.record(ev.DEPLOYED, name, message=f"in {now - started:.1f}s")
            elif status == "DEPLOY_FAILED":
                self.events.record(ev.DEPLOY_FAILED, name, message="replicas keep failing")

    def metric_snapshots(self) -> list[Snapshot]:
        """The controller's families for the node's scrape endpoint."""
        return controller_snapshots(self._apps.values(), self.events, self._deploy_durations)

    async def replica_metric_snapshots(self, timeout_s: float) -> list[Snapshot]:
        """Every RUNNING replica's families, asked in parallel; ``swell_replica_scrape_up``
        says which answered (a replica that did not is left out, not waited for)."""
        addresses = self.replica_control_addresses()
        answers = await asyncio.gather(
            *(self._replicas.metrics(address, timeout_s) for address in addresses.values())
        )
        found: list[Snapshot] = []
        up: list[tuple[tuple[str, ...], float]] = []
        for key, families in zip(addresses, answers, strict=True):
            up.append((key, 0.0 if families is None else 1.0))
            found.extend(families or [])
        found.append(
            family_snapshot(
                "swell_replica_scrape_up",
                "gauge",
                "1 if the replica answered this scrape, 0 if it did not in time.",
                ("application", "deployment", "replica"),
                up,
            )
        )
        return found

    def replica_control_addresses(self) -> dict[tuple[str, str, str], str]:
        """(application, deployment, replica) -> control address, for RUNNING replicas."""
        found: dict[tuple[str, str, str], str] = {}
        for app in self._apps.values():
            for name, deployment in app.deployments.items():
                for record in deployment.state.replicas.values():
                    if record.state is ReplicaState.RUNNING and record.control_address:
                        found[(app.name, name, record.replica_id)] = record.control_address
        return found

    def _start_replica(self, app: AppRuntime, deployment: DeploymentRuntime) -> None:
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
            max_request_body_bytes=self._max_request_body_bytes,
            logs_dir=self.logs_dir,
            tls=self.tls,
            rank=deployment.next_rank(replica_id),
            world_size=max(deployment.state.target, 1),
            **self._grpc_settings(target.is_ingress),
        )
        deployment.state.on_started(replica_id, self._clock())
        deployment.starting[replica_id] = self._spawn(
            self._lifecycle.bring_up(app, deployment, spec), f"swell-start-{replica_id}"
        )

    def _grpc_settings(self, is_ingress: bool) -> dict[str, Any]:
        """An ingress replica's gRPC services (grpc_options), when swell serves gRPC."""
        if self._grpc is None or not is_ingress:
            return {}
        return {
            "grpc_servicer_functions": tuple(self._grpc.grpc_servicer_functions),
            "grpc_request_timeout_s": self._grpc.request_timeout_s,
        }

    # What the ingress's wake-up server and the routers ask ---------------------------------

    def app_for_path(self, path: str) -> str | None:
        """The app whose route prefix is the longest one matching ``path``."""
        best: tuple[int, str] | None = None
        for app in self._apps.values():
            prefix = app.route_prefix
            if prefix is None or app.deleting:
                continue
            matches = prefix == "/" or path == prefix or path.startswith(prefix + "/")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), app.name)
        return None if best is None else best[1]

    def _ingress_of(self, app_name: str) -> DeploymentRuntime | None:
        app = self._apps.get(app_name)
        return None if app is None or app.deleting else app.ingress()

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
        return [name for name, app in self._apps.items() if not app.deleting]

    def ingress_deployment(self, app_name: str) -> str | None:
        deployment = self._ingress_of(app_name)
        return None if deployment is None else deployment.target.name

    # Observed state -----------------------------------------------------------------------

    def app_statuses(self) -> dict[str, str]:
        return {app.name: app_status(app) for app in self._apps.values()}

    def log_directories(self) -> list[str]:
        """Where replicas' log files are: the instance's directory, and each deployment's own
        ``logging_config.logs_dir``."""
        directories = [self.logs_dir] if self.logs_dir else []
        for app in self._apps.values():
            for deployment in app.deployments.values():
                logging_config = deployment.target.config.logging_config
                if logging_config is not None and logging_config.logs_dir:
                    directories.append(logging_config.logs_dir)
        return list(dict.fromkeys(directories))

    def status(self) -> dict[str, Any]:
        """Applications, deployments and replicas, shaped like Ray Serve's REST API."""
        return {
            "controller_info": {"pid": os.getpid()},
            "applications": applications_document(self._apps.values()),
        }


def _queue_limit(targets: list[DeploymentTarget]) -> int:
    """The ingress deployment's max_queued_requests: HAProxy sheds load past it."""
    ingress = next((t for t in targets if t.is_ingress), None)
    return -1 if ingress is None else ingress.config.max_queued_requests


def _app_queue_limit(app: AppRuntime) -> int:
    ingress = app.ingress()
    return -1 if ingress is None else ingress.target.config.max_queued_requests
