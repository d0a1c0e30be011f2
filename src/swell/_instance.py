"""A running swell instance in this process: controller, HAProxy and admin API on one thread.

The thread owns its own event loop; the public API talks to it with ``call()``. The instance
also answers the admin API (it is its ``AdminBackend``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import uvicorn

from swell._admin_backend import InstanceAdminBackend
from swell._cluster_tls import ClusterTLS
from swell._cluster_tls import load as load_cluster_tls
from swell._controller.admin_api import allowed_hosts, build_admin_app
from swell._controller.controller import Controller
from swell._controller.deployer import ConfigDeployer, Prepared
from swell._controller.lifecycle import IngressManager
from swell._controller.store import Checkpoint
from swell._controller.wake import WakeServer
from swell._dataplane.router import ClusterContext
from swell._engines.local import LocalEngine
from swell._ingress.haproxy_manager import HAProxyManager, ensure_port_free
from swell._logging.controller import ControllerLog
from swell._logging.files import HAPROXY_FILE, instance_logs_dir
from swell._private_files import (
    DirectoryLock,
    new_token,
    private_dir,
    read_private,
    read_token,
    runtime_dir,
    token_path,
    write_private,
)
from swell.config import ControllerOptions, HTTPOptions, gRPCOptions
from swell.exceptions import ConfigError
from swell.handle import close_routers, set_cluster_context

if TYPE_CHECKING:
    from swell._engines.base import Engine
    from swell._ray.cluster import RayConnection
    from swell._ray.ingress import ProxyFleet

T = TypeVar("T")

logger = logging.getLogger("swell.instance")

_START_DEADLINE_S = 60.0
_STOP_DEADLINE_S = 120.0
_STATE_TOKEN_NAME = "admin.token"


class CheckpointStore(Protocol):
    """Where a controller keeps its checkpoint: the state dir, or Ray's GCS."""

    def load(self) -> dict[str, Any] | None: ...

    def save(self, snapshot: dict[str, Any]) -> None: ...

    def clear(self) -> None: ...


def _serve_quietly(
    app: Any,
    sock: socket.socket | list[socket.socket],
    name: str,
    tls: ClusterTLS | None = None,
) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve an internal ASGI app on this loop (uvicorn leaves signals alone off the main
    thread); open long-polls and cold requests are not waited out at shutdown. ``tls``: with
    the cluster certificate (--tls-cert)."""
    config = uvicorn.Config(
        app,
        loop="none",
        lifespan="off",
        access_log=False,
        log_level="warning",
        # uvicorn's own logging setup would close every handler in this (the user's) process.
        log_config=None,
        timeout_graceful_shutdown=1,
        ssl_certfile=tls.cert if tls else None,
        ssl_keyfile=tls.key if tls else None,
    )
    server = uvicorn.Server(config)
    sockets = sock if isinstance(sock, list) else [sock]
    task = asyncio.get_running_loop().create_task(server.serve(sockets=sockets), name=name)
    return server, task


class _LateController:
    """The wake server starts before the controller exists (HAProxy needs its address)."""

    def __init__(self, instance: SwellInstance) -> None:
        self._instance = instance

    def app_for_path(self, path: str) -> str | None:
        controller = self._instance.controller
        return controller.app_for_path(path) if controller else None

    def note_waiting(self, app_name: str, delta: int) -> None:
        if self._instance.controller is not None:
            self._instance.controller.note_waiting(app_name, delta)

    async def wait_for_ingress_replica(self, app_name: str, timeout_s: float) -> str | None:
        controller = self._instance.controller
        if controller is None:
            return None
        return await controller.wait_for_ingress_replica(app_name, timeout_s)


def _loopback_for(host: str) -> str:
    """Where local processes reach a server bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host


class SwellInstance:
    """Starts, serves and stops everything one ``swell.run``/``swell run`` needs."""

    def __init__(
        self,
        http_options: HTTPOptions,
        controller_options: ControllerOptions,
        grpc_options: gRPCOptions | None = None,
        checkpoint: CheckpointStore | None = None,
    ) -> None:
        """``checkpoint``: where a controller on a Ray cluster (an actor) keeps its state;
        without it, the state dir's file when ``state_dir`` is set."""
        self.http_options = http_options
        self.grpc_options = grpc_options or gRPCOptions()
        self.controller_options = controller_options
        # Checked here, before anything starts: a bad file is a ConfigError naming its flag.
        self.cluster_tls = load_cluster_tls(
            controller_options.tls_cert, controller_options.tls_key, controller_options.tls_ca
        )
        self._thread = threading.Thread(
            target=self._thread_main, name="swell-controller", daemon=True
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self.controller: Controller | None = None
        self.deployer: ConfigDeployer | None = None
        self.ingress: HAProxyManager | None = None
        # Every log file of this instance (see _logging/files.py); set as it starts.
        self.logs_dir: Path | None = None
        # On a Ray cluster (controller_options.address): every node's HAProxy, and the link.
        self.fleet: ProxyFleet | None = None
        self._ray: RayConnection | None = None
        self.admin = InstanceAdminBackend(self)
        # Where replicas and other nodes reach this process (the node's IP on Ray).
        self._cluster_host = "127.0.0.1"
        self.admin_port: int | None = None
        self.admin_token = controller_options.admin_token or ""
        self.token_file: Path | None = None
        self._wake: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        # On Ray with --tls-cert: the admin API for routers on other nodes, over TLS.
        self._cluster_api: tuple[uvicorn.Server, asyncio.Task[None]] | None = None
        self._store = checkpoint
        self._saved_ports: dict[str, int] = {}
        self._abandon = False
        # The ports this instance listens on ("admin", "cluster", "wake"): a controller actor
        # restarted by Ray binds the same ones, so replicas and proxies find it again.
        self._ports: dict[str, int] = {}

    # Called from the user's thread --------------------------------------------------------

    def start(self) -> None:
        if self.controller_options.address is not None:
            # On the caller's thread: ray.init wants the main thread where there is one.
            from swell._ray.cluster import connect

            self._ray = connect(self.controller_options.address)
            self._cluster_host = self._ray.node_ip
        self._thread.start()
        if not self._started.wait(_START_DEADLINE_S):
            raise TimeoutError(f"swell did not start within {_START_DEADLINE_S}s")
        if self._start_error is not None:
            self._thread.join(_STOP_DEADLINE_S)
            self._disconnect()
            raise self._start_error

    def _disconnect(self) -> None:
        if self._ray is not None:
            self._ray.close()
            self._ray = None

    def call(self, make: Callable[[Controller], Coroutine[Any, Any, T]], timeout: float) -> T:
        """Run a coroutine on the controller's loop and wait for its result."""
        assert self._loop is not None and self.controller is not None
        future = asyncio.run_coroutine_threadsafe(make(self.controller), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"the controller did not answer within {timeout}s") from None

    def status(self) -> dict[str, Any]:
        async def read(controller: Controller) -> dict[str, Any]:
            return self.status_document()

        return self.call(read, 10.0)

    def deploy_prepared(self, prepared: Prepared, timeout: float) -> None:
        """Deploy applications (``swell.run``), after any config deploy in progress."""

        async def deploy(controller: Controller) -> None:
            assert self.deployer is not None
            await self.deployer.deploy(prepared)

        self.call(deploy, timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(_STOP_DEADLINE_S)
        self._disconnect()

    @property
    def _replica_ca(self) -> str | None:
        return self.cluster_tls.ca if self.cluster_tls is not None else None

    @property
    def on_ray(self) -> bool:
        return self._ray is not None

    @property
    def cluster_token(self) -> str:
        """What replicas' control and data endpoints require."""
        assert self.controller is not None
        return self.controller.cluster_token

    # On the controller's thread: the admin API's backend lives in _admin_backend.py ---------

    def status_document(self) -> dict[str, Any]:
        return self.admin.status_document()

    def request_stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def submit_config_threadsafe(self, document: Any, timeout: float = 30.0) -> None:
        """``submit_config`` from another thread (``swell run --reload``'s watcher)."""

        async def submit(controller: Controller) -> None:
            self.admin.submit_config(document)

        self.call(submit, timeout)

    # On the controller's thread -----------------------------------------------------------

    def _thread_main(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        state_dir = self.controller_options.state_dir
        checkpoint: CheckpointStore | None = self._store
        lock: DirectoryLock | None = None
        admin_server: uvicorn.Server | None = None
        admin_task: asyncio.Task[None] | None = None
        wake_server: uvicorn.Server | None = None
        wake_task: asyncio.Task[None] | None = None
        work_dir: Path | None = None
        controller_log: ControllerLog | None = None
        try:
            try:
                if checkpoint is not None:
                    work_dir = Path(tempfile.mkdtemp(prefix="swell-"))  # 0700
                    state_dir = None  # the scratch dir goes at the end
                elif state_dir is not None:
                    work_dir = private_dir(state_dir, "--state-dir")
                    lock = DirectoryLock(work_dir)
                    lock.acquire()
                    checkpoint = Checkpoint(work_dir)
                else:
                    work_dir = Path(tempfile.mkdtemp(prefix="swell-"))  # 0700
                self.logs_dir = instance_logs_dir(work_dir if state_dir is not None else None)
                controller_log = ControllerLog(self.logs_dir)
                await self._bring_up(work_dir, checkpoint)
                assert self._wake is not None and self.controller is not None
                wake_server, wake_task = self._wake
                admin_server, admin_task = await self._start_admin_api(
                    self._saved_ports.get("admin"), self._saved_ports.get("cluster")
                )
                self.controller.start()
            except BaseException as error:
                self._start_error = error
                # A controller actor that fails to come back (its port still taken, say)
                # leaves the replicas and proxies it adopted to the next try: Ray restarts it.
                self._abandon = self._store is not None
                return
            finally:
                self._started.set()
            await self._stop.wait()
        finally:
            await self._tear_down(checkpoint, work_dir if state_dir is None else None)
            cluster_server, cluster_task = self._cluster_api or (None, None)
            for server, task in (
                (admin_server, admin_task),
                (cluster_server, cluster_task),
                (wake_server, wake_task),
            ):
                if server is not None and task is not None:
                    server.should_exit = True
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(task, 10.0)
            self._forget_token_file()
            if controller_log is not None:
                controller_log.close()
            if lock is not None:
                lock.release()

    async def _bring_up(self, work_dir: Path, checkpoint: CheckpointStore | None) -> None:
        options = self.controller_options
        saved = checkpoint.load() if checkpoint is not None else None
        self._saved_ports = dict(saved.get("ports", {})) if saved is not None else {}
        if "admin" not in self._saved_ports:
            ensure_port_free(options.admin_host, options.admin_port, "the admin API (--admin-port)")
        if saved is not None and saved.get("admin_token"):
            self.admin_token = saved["admin_token"]  # kept in the cluster's GCS (Ray)
        elif checkpoint is not None and not self.admin_token and self._store is None:
            # A restarted controller keeps the token its clients already have.
            kept = read_token(work_dir / _STATE_TOKEN_NAME)
            self.admin_token = kept or new_token()
            write_private(work_dir / _STATE_TOKEN_NAME, self.admin_token.encode())
        self.admin_token = self.admin_token or new_token()
        wake_server, wake_task, wake_address = await self._start_wake_server(
            self._saved_ports.get("wake", 0)
        )
        self._wake = (wake_server, wake_task)
        engine: Engine
        ingress: IngressManager
        if self._ray is not None:
            from swell._engines.ray import RayEngine
            from swell._ray.ingress import ProxyFleet

            engine = RayEngine()
            ingress = self.fleet = ProxyFleet(
                self.http_options,
                wake_address,
                self.controller_options.proxy_location,
                replica_ca=self._replica_ca,
            )
        else:
            engine = LocalEngine()
            ingress = self.ingress = HAProxyManager(
                self.http_options,
                work_dir,
                wake_address,
                survive_controller=checkpoint is not None,
                grpc_options=self.grpc_options,
                log_path=self.logs_dir / HAPROXY_FILE if self.logs_dir else None,
                replica_ca=self._replica_ca,
            )
        self.controller = Controller(
            engine,
            ingress,
            list(sys.path),
            cluster_token=saved["token"] if saved else None,
            # On Ray a replica's lifeline is its actor, which outlives the controller anyway.
            survive_controller=checkpoint is not None and self._ray is None,
            max_request_body_bytes=self.http_options.max_request_body_bytes,
            grpc_options=self.grpc_options,
            logs_dir=str(self.logs_dir) if self.logs_dir else None,
            tls=self.cluster_tls,
        )
        self.deployer = ConfigDeployer(self.controller, work_dir, self.controller._spawn)
        if saved is not None:
            self.deployer.applied = saved.get("applied_config")
        if self.fleet is not None:
            await self._bring_up_fleet(saved, engine)
        else:
            assert isinstance(engine, LocalEngine)
            await self._bring_up_ingress(saved, engine, wake_address)
        if checkpoint is not None:
            snapshot_of = self._snapshot
            self.controller.checkpoint = lambda: checkpoint.save(snapshot_of())

    async def _tear_down(self, checkpoint: CheckpointStore | None, scratch: Path | None) -> None:
        set_cluster_context(None)
        close_routers()
        if self._abandon:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            return
        if self.ingress is not None:
            await self.ingress.mark_draining()  # probes see it before the replicas drain
        if self.controller is not None:
            await self.controller.shutdown()
        if self.ingress is not None:
            await self.ingress.stop()
        if self.fleet is not None:
            await self.fleet.stop()
        if checkpoint is not None:
            checkpoint.clear()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)

    def _snapshot(self) -> dict[str, Any]:
        assert self.controller is not None and self.deployer is not None
        snapshot: dict[str, Any] = {
            "token": self.controller.cluster_token,
            "apps": self.controller.snapshot(),
            "applied_config": self.deployer.applied,
        }
        if self.fleet is not None:
            snapshot["backends"] = self.fleet.backends
            snapshot["ports"] = dict(self._ports)
            snapshot["admin_token"] = self.admin_token
        else:
            assert self.ingress is not None
            snapshot["haproxy_pid"] = self.ingress.pid
            snapshot["backends"] = self.ingress.backends
        return snapshot

    async def _bring_up_fleet(self, saved: dict[str, Any] | None, engine: Engine) -> None:
        """Every node's proxy; after a controller actor's restart, adopt the proxies and
        replica actors its predecessor left, and drop what it left half done."""
        fleet, controller = self.fleet, self.controller
        assert fleet is not None and controller is not None
        from swell._engines.ray import RayEngine

        assert isinstance(engine, RayEngine)
        if saved is None:
            # What a controller that ended without a checkpoint left (killed for good, say).
            await asyncio.get_running_loop().run_in_executor(None, fleet.kill_strays)
            await asyncio.get_running_loop().run_in_executor(None, engine.kill_strays)
            await fleet.start()
            return
        adopted_proxies = await fleet.adopt(saved["backends"])
        await fleet.start()  # the nodes without one get a proxy with the whole state
        gone = controller.restore(saved["apps"], engine.adopt)
        running = controller.replica_ids()
        for app_name, backend in fleet.backends.items():
            for server in backend.servers:
                if (app_name, server.name) not in running:
                    gone.append((app_name, server.name))
        for app_name, replica_id in dict.fromkeys(gone):
            await fleet.remove_server(app_name, replica_id)
        strays = await asyncio.get_running_loop().run_in_executor(None, engine.kill_strays)
        logger.info(
            "adopted %d proxies and %d replicas; %d replicas were gone, %d stray actors killed",
            adopted_proxies,
            len(running),
            len(gone),
            strays,
        )

    async def _bring_up_ingress(
        self, saved: dict[str, Any] | None, engine: LocalEngine, wake_address: str
    ) -> None:
        """Start HAProxy, or adopt the one a killed controller left, with its replicas."""
        ingress, controller = self.ingress, self.controller
        assert ingress is not None and controller is not None
        adopted = False
        if saved is not None:
            adopted = await ingress.adopt(saved["haproxy_pid"], saved["backends"])
        if adopted:
            await ingress.set_wake_address(wake_address)
        else:
            if saved is not None:
                ingress.restore_backends(
                    {name: replace(b, servers=()) for name, b in saved["backends"].items()}
                )
            await ingress.start()
        if saved is None:
            return
        gone = controller.restore(
            saved["apps"], lambda app_name, replica_id, ready: engine.adopt(replica_id, ready)
        )
        for app_name, replica_id in gone:
            await ingress.remove_server(app_name, replica_id)
        if not adopted:
            # A new HAProxy knows no servers yet: add the adopted ingress replicas.
            await controller.rejoin_haproxy()

    async def _start_wake_server(
        self, port: int = 0
    ) -> tuple[uvicorn.Server, asyncio.Task[None], str]:
        """The backup server HAProxy uses while an app has no replica (scale from zero)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Every node's HAProxy must reach it: on Ray it listens on this node's IP.
        sock.bind((self._cluster_host, port))
        self._ports["wake"] = sock.getsockname()[1]
        address = f"{self._cluster_host}:{self._ports['wake']}"
        app = WakeServer(_LateController(self), self.http_options.queue_timeout_s, self.cluster_tls)
        # HAProxy reaches it over TLS too when replicas use it (the requests are users').
        server, task = _serve_quietly(app, sock, "swell-wake-server", self.cluster_tls)
        return server, task, address

    async def _start_admin_api(
        self, admin_port: int | None = None, cluster_port: int | None = None
    ) -> tuple[uvicorn.Server, asyncio.Task[None]]:
        """The admin API; ``admin_port``/``cluster_port``: the ones a restarted controller
        actor had (its clients and replicas know them)."""
        controller = self.controller
        assert controller is not None
        options = self.controller_options
        family = socket.AF_INET6 if ":" in options.admin_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((options.admin_host, options.admin_port if admin_port is None else admin_port))
        self.admin_port = self._ports["admin"] = sock.getsockname()[1]
        self._publish_token_file()
        hosts = allowed_hosts(options.admin_host, self.admin_port)
        sockets = [sock]
        controller.controller_url = f"http://{_loopback_for(options.admin_host)}:{self.admin_port}"
        tls = self.cluster_tls if self._ray is not None else None
        if tls is None and self._ray is not None and options.admin_host in ("0.0.0.0", "::", ""):
            # Bound everywhere already: other nodes reach it at this node's IP.
            controller.controller_url = f"http://{self._cluster_host}:{self.admin_port}"
        elif self._ray is not None:
            # Routers in replicas on every node watch replica sets here: the same app (the
            # same tokens) on this node's IP as well.
            cluster_sock = socket.socket(
                socket.AF_INET6 if ":" in self._cluster_host else socket.AF_INET
            )
            cluster_sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            cluster_sock.bind((self._cluster_host, cluster_port or 0))
            cluster_port = self._ports["cluster"] = cluster_sock.getsockname()[1]
            cluster_hosts = allowed_hosts(self._cluster_host, cluster_port)
            scheme = "https" if tls else "http"
            controller.controller_url = f"{scheme}://{self._cluster_host}:{cluster_port}"
            if tls is not None:
                # Routers send the cluster token here: with --tls-cert, over TLS (a server of
                # its own, since uvicorn's TLS is per server; the CLI's port stays as it is).
                cluster_app = build_admin_app(
                    self.admin,
                    self.admin_token,
                    controller.cluster_token,
                    cluster_hosts,
                    self._replica_ca,
                )
                self._cluster_api = _serve_quietly(
                    cluster_app, cluster_sock, "swell-cluster-api", tls
                )
            else:
                sockets.append(cluster_sock)
                hosts = None if hosts is None or cluster_hosts is None else hosts | cluster_hosts
        app = build_admin_app(
            self.admin, self.admin_token, controller.cluster_token, hosts, self._replica_ca
        )
        set_cluster_context(
            ClusterContext(controller.controller_url, controller.cluster_token, self._replica_ca)
        )
        return _serve_quietly(app, sockets, "swell-admin-api")

    def _publish_token_file(self) -> None:
        """Leave the admin token where this user's CLI finds it (0600 in a 0700 directory)."""
        assert self.admin_port is not None
        path = token_path(runtime_dir(), self.admin_port)
        write_private(path, self.admin_token.encode())
        self.token_file = path

    def _forget_token_file(self) -> None:
        path = self.token_file
        if path is None:
            return
        with contextlib.suppress(ConfigError, OSError):
            if read_private(path) == self.admin_token.encode():
                path.unlink()
        self.token_file = None
