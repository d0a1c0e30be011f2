"""Entry point of one replica process: ``python -m swell._replica.main EVENTS_FD``.

The controller writes a pickled ReplicaSpec to stdin and keeps stdin open as a lifeline: when
it reads EOF (the controller is gone), the replica shuts down. Lifecycle events (ready, failed)
go back as JSON lines on the inherited EVENTS_FD pipe, so user prints cannot garble them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
import os
import signal
import socket
import struct
import sys
import traceback
from typing import Any

import cloudpickle

_SERVER_START_DEADLINE_S = 30.0


def _read_spec() -> Any:
    header = sys.stdin.buffer.read(8)
    (length,) = struct.unpack("!Q", header)
    return cloudpickle.loads(sys.stdin.buffer.read(length))


def _emit(events_fd: int, event: dict[str, Any]) -> None:
    os.write(events_fd, (json.dumps(event) + "\n").encode())


async def _serve(spec: Any, events_fd: int, access: Any) -> int:
    from swell import multiplex
    from swell._context import ReplicaContext, set_replica_context
    from swell._dataplane.router import ClusterContext
    from swell._dataplane.service import ReplicaService
    from swell._dataplane.service import start_server as start_dataplane
    from swell._dataplane.service import stop_server as stop_dataplane
    from swell._logging.access import LoggedDispatcher
    from swell._metrics.process import PROCESS
    from swell._ray_env import run_sync_in_threadpool
    from swell._replica.fastapi_view import bind_routes_to_instance, resolve_ingress_app
    from swell._replica.http_server import HTTPServer, LifespanFailed
    from swell._replica.server import ReplicaASGI
    from swell._replica.user_callable import UserCallable
    from swell.deployment import Deployment
    from swell.handle import set_cluster_context
    from swell.schema import ReplicaRank

    tls = spec.tls
    set_cluster_context(
        ClusterContext(spec.controller_url, spec.cluster_token, tls.ca if tls else None)
    )
    try:
        loaded = spec.deployment_ref.load()
        target = loaded.func_or_class if isinstance(loaded, Deployment) else loaded
        ingress_app = resolve_ingress_app(getattr(target, "__swell_ingress_app__", None))
        is_class = isinstance(target, type)
        user = UserCallable(
            target,
            is_class,
            spec.config.max_ongoing_requests,
            sync_in_threads=run_sync_in_threadpool(),  # Ray's switch, read where Ray reads it
        )
        args, kwargs = cloudpickle.loads(spec.init_args)
        context = ReplicaContext(
            spec.app_name,
            spec.deployment_name,
            spec.replica_id,
            None,
            rank=ReplicaRank(spec.rank, 0, spec.rank),
            world_size=spec.world_size,
        )
        set_replica_context(context)  # constructors may ask for it too, as in Ray
        await user.construct(args, kwargs)
        set_replica_context(dataclasses.replace(context, servable_object=user.instance))
        if spec.config.user_config is not None:
            await user.reconfigure(spec.config.user_config)
        await asyncio.wait_for(user.check_health(), spec.config.health_check_timeout_s)
        if ingress_app is not None and isinstance(target, type):
            bind_routes_to_instance(ingress_app, target, user.instance)
    except BaseException:
        _emit(events_fd, {"event": "failed", "error": traceback.format_exc()})
        return 1

    app = ReplicaASGI(
        user,
        spec.route_prefix,
        ingress_app,
        spec.cluster_token,
        spec.max_request_body_bytes,
        app_name=spec.app_name,
        access_log=access,
    )
    service = ReplicaService(
        LoggedDispatcher(user, access),
        spec.cluster_token,
        spec.config.max_ongoing_requests,
        lambda: app.ongoing,
        replica_id=spec.replica_id,
        app_name=spec.app_name,
    )
    # Callers learn which models this replica holds, to send each model's calls here.
    if multiplex.in_use():
        multiplex.set_listener(service.publish_models)
        service.publish_models(multiplex.loaded_model_ids())  # sent on every new connection
    dataplane_server, data_port = await start_dataplane(
        service, spec.host, tls.server_context() if tls else None
    )
    grpc_ingress = None
    if spec.grpc_servicer_functions:
        try:
            from swell._replica.grpc_server import start_grpc_ingress

            grpc_ingress = await start_grpc_ingress(
                spec.grpc_servicer_functions,
                user,
                app,
                spec.host,
                spec.grpc_request_timeout_s,
                tls,
            )
        except BaseException:
            _emit(events_fd, {"event": "failed", "error": traceback.format_exc()})
            return 1
    app.handle_load = service.load
    PROCESS.context = (spec.app_name, spec.deployment_name, spec.replica_id)
    PROCESS.ongoing = service.load
    user_socket = _listen(spec.host)
    control_socket = _listen(spec.host)
    port = user_socket.getsockname()[1]
    control_port = control_socket.getsockname()[1]
    server = HTTPServer(
        # Longer than HAProxy keeps idle pooled connections (pool-purge-delay 5s), so
        # HAProxy always closes them first.
        keep_alive_s=20,
        # --tls-cert: the user port (HAProxy's hop) and the control port speak TLS.
        ssl_context=tls.server_context() if tls else None,
        lifespan_app=ingress_app,
    )
    loop = asyncio.get_running_loop()

    def begin_shutdown() -> None:
        app.draining = True
        service.start_draining()  # handle calls go to other replicas from now on
        server.begin_shutdown()
        if grpc_ingress is not None:
            grpc_ingress.begin_stop(spec.config.graceful_shutdown_timeout_s)

    def on_lifeline_readable() -> None:
        if not os.read(0, 4096):  # EOF: the controller is gone
            loop.remove_reader(0)
            begin_shutdown()

    try:
        await asyncio.wait_for(
            server.start(
                [
                    # WebSockets reach an ingress app's routes; the control port takes none.
                    (user_socket, app, ingress_app is not None),
                    (control_socket, app.control, False),
                ]
            ),
            _SERVER_START_DEADLINE_S,
        )
    except LifespanFailed as error:
        reason = f"the app's lifespan startup failed: {error}"
        _emit(events_fd, {"event": "failed", "error": reason})
        return 1
    except (OSError, TimeoutError) as error:
        _emit(events_fd, {"event": "failed", "error": f"the HTTP server did not start: {error!r}"})
        return 1
    if not spec.survive_controller:
        loop.add_reader(0, on_lifeline_readable)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, begin_shutdown)
    # Everything built so far (modules, the user's model) lives as long as the replica: out
    # of the collector's sight, a full collection scans only what requests made since (about
    # 11 ms less per full collection with swell's own imports alone; more with a model).
    gc.collect()
    gc.freeze()
    _emit(
        events_fd,
        {
            "event": "ready",
            "port": port,
            "pid": os.getpid(),
            "data_port": data_port,
            "control_port": control_port,
            "grpc_port": grpc_ingress.port if grpc_ingress is not None else None,
        },
    )
    await server.serve_until_shutdown(spec.config.graceful_shutdown_timeout_s or None)
    if grpc_ingress is not None:
        await grpc_ingress.wait_stopped(spec.config.graceful_shutdown_timeout_s)
    # HTTP has drained; let in-flight handle calls finish within the same grace period.
    await stop_dataplane(dataplane_server, service, spec.config.graceful_shutdown_timeout_s)
    try:
        await asyncio.wait_for(
            _unload_then_shutdown(user, multiplex), spec.config.graceful_shutdown_timeout_s or 1.0
        )
    except Exception:
        traceback.print_exc()
    return 0


async def _unload_then_shutdown(user: Any, multiplex: Any) -> None:
    """Models loaded with @multiplexed are unloaded (their __del__) before the user's own."""
    await multiplex.unload_all()
    await user.shutdown()


def _listen(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


def main() -> None:
    events_fd = int(sys.argv[1])
    spec = _read_spec()
    for entry in reversed(spec.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    from swell._logging.replica import configure_replica_logging, flush_prints

    try:
        access = configure_replica_logging(
            spec.config.logging_config,
            spec.logs_dir,
            spec.app_name,
            spec.deployment_name,
            spec.replica_id,
        )
    except OSError as error:
        where = (spec.config.logging_config and spec.config.logging_config.logs_dir) or (
            spec.logs_dir
        )
        _emit(
            events_fd,
            {
                "event": "failed",
                "error": f"cannot write the replica's log file in {where} ({error}); set "
                "logging_config.logs_dir to a directory this user can write",
            },
        )
        os._exit(1)
    try:
        import uvloop

        code = uvloop.run(_serve(spec, events_fd, access))
    except ImportError:
        code = asyncio.run(_serve(spec, events_fd, access))
    # The user's __del__ already ran in _serve; exiting without the interpreter's teardown
    # keeps it from running twice.
    flush_prints()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
