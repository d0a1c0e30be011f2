"""The public functions: Ray Serve's names, swell's engine underneath."""

from __future__ import annotations

import atexit
import inspect
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

from swell import _connect, _local_testing, _signals
from swell._admin_client import admin_request, fetch_status
from swell._context import ReplicaContext
from swell._context import get_replica_context as _get_replica_context
from swell._controller.controller import Controller
from swell._controller.model import DeploymentTarget
from swell._grpc_services import load_service_methods
from swell._instance import SwellInstance
from swell._ray_env import note_ignored_switches, ray_auth_token
from swell._targets import deployment_targets, prepare_config
from swell.config import (
    ControllerOptions,
    HTTPOptions,
    LoggingConfig,
    ProxyLocation,
    RunOptions,
    ServeConfig,
    gRPCOptions,
    validate_deployment_options,
    validate_model,
)
from swell.deployment import INGRESS_APP_ATTRIBUTE, Application, Deployment
from swell.exceptions import ConfigError, DeploymentFailedError
from swell.handle import DeploymentHandle
from swell.serve_status import ServeStatus

if TYPE_CHECKING:
    from swell._ray.driver import RemoteInstance

__all__ = ["admin_request", "fetch_status"]  # re-exported for the CLI

C = TypeVar("C")

_STATUS_POLL_S = 0.05
_CONTROLLER_CALL_TIMEOUT_S = 120.0

# In this process, or (on a Ray cluster) the cluster's controller actor.
_instance: SwellInstance | RemoteInstance | None = None
_instance_lock = threading.Lock()
_atexit_registered = threading.Event()


# Declaring deployments -------------------------------------------------------------------


@overload
def deployment(_func_or_class: Callable[..., Any], /) -> Deployment: ...


@overload
def deployment(
    _func_or_class: None = None, /, **options: Any
) -> Callable[[Callable[..., Any]], Deployment]: ...


def deployment(
    _func_or_class: Callable[..., Any] | None = None, /, **options: Any
) -> Deployment | Callable[[Callable[..., Any]], Deployment]:
    """Declare a deployment: ``@deployment`` or ``@deployment(num_replicas=2, ...)``."""

    def wrap(func_or_class: Callable[..., Any]) -> Deployment:
        if isinstance(func_or_class, Deployment):
            return func_or_class.options(**options)
        if not callable(func_or_class):
            raise ConfigError(
                f"@swell.deployment must decorate a class or a function, not "
                f"{type(func_or_class).__name__}."
            )
        name = options.get("name") or getattr(func_or_class, "__name__", "deployment")
        config = validate_deployment_options(options, f"options for deployment '{name}'")
        return Deployment(func_or_class, config)

    if _func_or_class is not None:
        return wrap(_func_or_class)
    return wrap


class _IngressDecorator(Protocol):
    @overload
    def __call__(self) -> type[Any]: ...
    @overload
    def __call__(self, cls: C) -> C: ...


def ingress(app: Any) -> _IngressDecorator:
    """Serve an ASGI app (a FastAPI app) from a class deployment; methods may be its routes.

    ``app`` may also be a function without arguments that returns the app (as in Ray): it
    is called in each replica. Called without a class (``serve.ingress(app)()``), it makes
    one that only serves the app, as Ray does.
    """

    def wrap(cls: Any = None) -> Any:
        if cls is None:
            cls = type("ASGIIngressDeployment", (_BareIngress,), {})
        target = cls.func_or_class if isinstance(cls, Deployment) else cls
        if not inspect.isclass(target):
            raise ConfigError("@swell.ingress(app) decorates a class, not a function.")
        setattr(target, INGRESS_APP_ATTRIBUTE, app)
        return cls

    return wrap


class _BareIngress:
    """The class ``serve.ingress(app)()`` makes: it only serves the app."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


def get_replica_context() -> ReplicaContext:
    """The app, deployment and replica this code runs in (only inside a replica)."""
    return _get_replica_context()


# Running ---------------------------------------------------------------------------------


def start(
    http_options: HTTPOptions | dict[str, Any] | None = None,
    admin_host: str | None = None,
    admin_port: int | None = None,
    admin_token: str | None = None,
    state_dir: str | None = None,
    address: str | None = None,
    proxy_location: ProxyLocation | None = None,
    grpc_options: gRPCOptions | dict[str, Any] | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    tls_ca: str | None = None,
) -> None:
    """Start swell in this process (HAProxy, controller, admin API) if it is not running.

    With ``state_dir`` the controller checkpoints there, and a later start on the same
    directory adopts the HAProxy and replicas a killed controller left running. With
    ``address`` ("auto", or a Ray cluster's address) the controller is a detached actor on
    that cluster (created unless one runs), replicas run as actors and ``proxy_location``
    says which of its nodes get an HAProxy; it outlives this process until ``shutdown()``.
    With ``grpc_options`` listing servicer functions, HAProxy also serves gRPC on its port.
    With ``tls_cert``/``tls_key`` (and ``tls_ca``, default the certificate itself) every hop
    between swell's processes (HAProxy and handles to replicas, the controller to replicas)
    uses TLS, verified against the CA; see ControllerOptions.
    """
    global _instance
    with _instance_lock:
        if _instance is not None:
            return
        if isinstance(http_options, HTTPOptions):
            http = http_options
        else:
            http = validate_model(HTTPOptions, http_options or {}, "http_options")
        controller_settings: dict[str, Any] = {}
        if admin_host is not None:
            controller_settings["admin_host"] = admin_host
        if admin_port is not None:
            controller_settings["admin_port"] = admin_port
        if admin_token is None:
            admin_token = ray_auth_token()  # a Ray pod with token authentication
        if admin_token is not None:
            controller_settings["admin_token"] = admin_token
        if state_dir is not None:
            controller_settings["state_dir"] = state_dir
        if address is not None:
            controller_settings["address"] = address
        if proxy_location is not None:
            controller_settings["proxy_location"] = proxy_location
        for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key), ("tls_ca", tls_ca)):
            if value is not None:
                controller_settings[name] = value
        controller = validate_model(ControllerOptions, controller_settings, "controller options")
        grpc = _checked_grpc_options(grpc_options, controller, http)
        note_ignored_switches()
        instance: SwellInstance | RemoteInstance
        if controller.address is not None:
            from swell._ray.driver import RemoteInstance

            instance = RemoteInstance(http, controller)
        else:
            instance = SwellInstance(http, controller, grpc)
        instance.start()
        _instance = instance
        if not _atexit_registered.is_set():
            # A script that ends without shutdown() still drains and stops its replicas (on
            # one machine; a Ray cluster's controller keeps serving, as Ray Serve's does).
            atexit.register(_at_exit)
            _atexit_registered.set()


def _checked_grpc_options(
    options: gRPCOptions | dict[str, Any] | None, controller: ControllerOptions, http: HTTPOptions
) -> gRPCOptions:
    """Validate grpc_options, importing each servicer function now (a bad path names itself)."""
    if isinstance(options, gRPCOptions):
        grpc = options
    else:
        grpc = validate_model(gRPCOptions, options or {}, "grpc_options")
    if grpc.enabled:
        if controller.address is not None:
            raise ConfigError(
                "grpc_options.grpc_servicer_functions is not supported on a Ray cluster yet "
                "(address is set); serve gRPC with the local engine, or drop grpc_options"
            )
        if grpc.port == http.port:
            raise ConfigError(
                f"grpc_options.port and http_options.port are both {grpc.port}; HAProxy serves "
                "gRPC and HTTP on ports of their own: pick another for one of them"
            )
        load_service_methods(grpc.grpc_servicer_functions)
    return grpc


def run(
    target: Application,
    blocking: bool = False,
    name: str = "default",
    route_prefix: str | None = "/",
    logging_config: LoggingConfig | dict[str, Any] | None = None,
    _local_testing_mode: bool = False,
) -> DeploymentHandle:
    """Deploy an application, wait until every deployment is healthy, return its handle.

    Raises DeploymentFailedError (with the replica's traceback) if its replicas keep failing
    to start. With ``blocking=True`` it then serves until SIGINT or SIGTERM, and shuts down.
    ``_local_testing_mode=True`` (Ray's) constructs the deployments in this process instead,
    for unit tests: no HTTP, handles call them directly.
    """
    if not isinstance(target, Application):
        hint = f" Call {target.name}.bind() first." if isinstance(target, Deployment) else ""
        raise ConfigError(
            f"swell.run() takes an Application (what .bind() returns), not "
            f"{type(target).__name__}.{hint}"
        )
    settings = {"name": name, "route_prefix": route_prefix, "logging_config": logging_config}
    options = validate_model(RunOptions, settings, "run()")
    if _local_testing_mode:
        return DeploymentHandle(_local_testing.run_local(target, options.name), options.name)
    targets = deployment_targets(target, options.name, logging_config=options.logging_config)
    _deploy_and_wait([(options, targets)])
    if blocking:
        _serve_until_signalled()
    return DeploymentHandle(target.ingress_name, options.name)


def get_app_handle(name: str) -> DeploymentHandle:
    """A handle to an application's ingress deployment.

    Works in the process that runs swell, inside any replica, and in any other process of
    the user who started swell (it joins through the admin API; see ``connect``)."""
    local = _local_testing.ingress_of(name)
    if local is not None:
        return DeploymentHandle(local, name)
    if _instance is None:
        return DeploymentHandle(_connect.ingress_deployment(name), name)

    async def ingress_of(controller: Controller) -> str | None:
        return controller.ingress_deployment(name)

    deployment_name = _instance.call(ingress_of, _CONTROLLER_CALL_TIMEOUT_S)
    if deployment_name is None:
        raise ConfigError(f"No application named {name!r} is running.")
    return DeploymentHandle(deployment_name, name)


def get_deployment_handle(deployment_name: str, app_name: str | None = None) -> DeploymentHandle:
    """A handle to any deployment; inside a replica the app defaults to the replica's own."""
    if app_name is None:
        try:
            app_name = _get_replica_context().app_name
        except RuntimeError:
            app_name = "default"
    if _instance is None and _local_testing.router_for(app_name, deployment_name) is None:
        _connect.ensure_connected()
    return DeploymentHandle(deployment_name, app_name)


def connect(address: str | None = None, token_file: str | None = None) -> None:
    """Join a running swell instance from this process, so that handles work here.

    ``get_app_handle`` and ``get_deployment_handle`` do it by themselves for an instance on
    the default admin address; call this for another one (``address`` is its admin API,
    e.g. ``http://127.0.0.1:8265``)."""
    _connect.connect(address, token_file)


def _deploy_and_wait(apps: list[tuple[RunOptions, list[DeploymentTarget]]]) -> None:
    """Hand validated applications to the controller, then wait for all of them."""
    start()
    instance = _require_instance()
    instance.deploy_prepared(apps, _CONTROLLER_CALL_TIMEOUT_S)
    for options, _ in apps:
        _wait_until_settled(instance, options.name)


def run_config(config: ServeConfig, blocking: bool = False) -> None:
    """Deploy every application of a config file; all are validated before any is touched."""
    prepared = prepare_config(config)
    start(
        http_options=config.http_options,
        proxy_location=config.proxy_location,
        grpc_options=config.grpc_options,
    )
    _deploy_and_wait(prepared)
    if blocking:
        _serve_until_signalled()


def _wait_until_settled(instance: SwellInstance | RemoteInstance, app_name: str) -> None:
    """Block until the app is RUNNING; raise as soon as it is DEPLOY_FAILED (or, under
    ``swell run``, KeyboardInterrupt as soon as Ctrl-C is pressed)."""
    while True:
        if _signals.stop_requested.is_set():
            raise KeyboardInterrupt
        app = instance.status()["applications"].get(app_name)
        if app is None:
            raise DeploymentFailedError(f"Application '{app_name}' was deleted while deploying.")
        if app["status"] == "RUNNING":
            return
        if app["status"] == "DEPLOY_FAILED":
            raise DeploymentFailedError(
                f"Application '{app_name}' failed to deploy:\n{app['message']}"
            )
        time.sleep(_STATUS_POLL_S)


def _serve_until_signalled() -> None:
    """Serve until SIGINT or SIGTERM (or until the instance stops by itself, after
    ``POST /api/swell/shutdown``), then shut down in order."""
    owned = not _signals.installed()
    _signals.install()
    try:
        while not _signals.stop_requested.wait(0.5) and _instance is not None and _instance.running:
            pass
    finally:
        if owned:
            _signals.restore()
        shutdown()


def _require_instance() -> SwellInstance | RemoteInstance:
    if _instance is None:
        raise RuntimeError("swell is not running in this process; call swell.run() first.")
    return _instance


def delete(name: str) -> None:
    """Drain and remove one application; the others keep serving."""
    if _local_testing.delete_local(name):
        return
    instance = _require_instance()

    async def remove(controller: Controller) -> None:
        await controller.delete_app(name)

    instance.call(remove, _CONTROLLER_CALL_TIMEOUT_S)


def shutdown() -> None:
    """Stop every application, every replica and HAProxy."""
    global _instance
    _local_testing.shutdown_local()
    with _instance_lock:
        instance, _instance = _instance, None
    if instance is not None:
        instance.stop()


def _at_exit() -> None:
    global _instance
    if _instance is not None and not isinstance(_instance, SwellInstance):
        with _instance_lock:
            instance, _instance = _instance, None
        if instance is not None:
            instance.detach()
        return
    shutdown()


def status(address: str | None = None) -> ServeStatus:
    """Applications, deployments, replicas and the ingress: from this process or an admin API."""
    if _instance is not None and address is None:
        return ServeStatus.from_dict(_instance.status())
    return ServeStatus.from_dict(fetch_status(address or _default_admin_address()))


def _default_admin_address() -> str:
    defaults = ControllerOptions()
    return f"http://{defaults.admin_host}:{defaults.admin_port}"
