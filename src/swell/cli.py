"""The ``swell`` command.

``run`` serves in the foreground; ``start`` runs a detached instance that ``deploy``, ``status``,
``logs``, ``config`` and ``shutdown`` drive over its admin API; ``build`` writes a config file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from swell import _signals, api
from swell._admin_client import default_admin_address, resolve_token
from swell._app_source import (
    apply_default_runtime_env,
    runtime_env_from,
    use_app_dir,
    with_default_runtime_env,
)
from swell._cluster_tls import load as load_cluster_tls
from swell._controller.admin_api import view_token
from swell._import_path import load_application
from swell._logging.client import print_logs
from swell._private_files import open_private_log, private_dir, read_token, runtime_dir
from swell._procs import pid_alive
from swell._protocol import DASHBOARD_PATH
from swell._ray_env import ray_auth_token
from swell._reload import watch_and_redeploy
from swell.config import (
    ControllerOptions,
    HTTPOptions,
    ProxyLocation,
    RunOptions,
    ServeConfig,
    validate_model,
)
from swell.config_file import build_config, load_config_file
from swell.exceptions import ControllerUnavailableError, DeploymentFailedError, SwellError

_DEFAULT_HTTP = HTTPOptions()
_DEFAULT_CONTROLLER = ControllerOptions()
_DEFAULT_RUN = RunOptions()
_DEFAULT_ADDRESS = default_admin_address()
_START_DEADLINE_S = 60.0
_DEPLOY_TIMEOUT_S = 600.0
_POLL_S = 0.25


def _admin_token_from(args: argparse.Namespace) -> str | None:
    """A token the user chose, read from a file (a token in argv would be visible to every
    user on the machine through /proc), else Ray's (a KubeRay pod with token auth)."""
    if args.admin_token_file is None:
        return ray_auth_token()
    token = read_token(Path(args.admin_token_file).expanduser())
    if token is None:
        raise SwellError(f"--admin-token-file {args.admin_token_file} is missing or empty")
    return token


def _start_in_process(
    args: argparse.Namespace,
    http_options: Any,
    proxy_location: ProxyLocation | None = None,
    grpc_options: Any = None,
) -> None:
    api.start(
        http_options=http_options,
        grpc_options=grpc_options if grpc_options is not None else _grpc_options_of(args),
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        admin_token=_admin_token_from(args),
        state_dir=args.state_dir,
        address=args.address,
        proxy_location=proxy_location,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
    )


def _grpc_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """grpc_options from Ray's `serve start` flags, over those a `swell start` passed on."""
    options: dict[str, Any] = json.loads(getattr(args, "grpc_options_json", None) or "{}")
    if getattr(args, "grpc_port", None) is not None:
        options["port"] = args.grpc_port
    if getattr(args, "grpc_servicer_functions", None):
        options["grpc_servicer_functions"] = list(args.grpc_servicer_functions)
    return options


def _run_document(args: argparse.Namespace, runtime_env: dict[str, Any] | None) -> dict[str, Any]:
    """What `swell run` serves, as a config document (a config file's, or one app's)."""
    if _is_config_file(args.import_path):
        document: dict[str, Any] = yaml.safe_load(Path(args.import_path).read_text()) or {}
        return with_default_runtime_env(document, runtime_env)
    app: dict[str, Any] = {
        "name": args.name,
        "route_prefix": args.route_prefix,
        "import_path": args.import_path,
    }
    if runtime_env is not None:
        app["runtime_env"] = runtime_env
    return {"applications": [app]}


def _is_config_file(import_path: str) -> bool:
    return import_path.endswith((".yaml", ".yml"))


def _cmd_run(args: argparse.Namespace) -> int:
    use_app_dir(args.app_dir)
    runtime_env = runtime_env_from(args.runtime_env, args.runtime_env_json, args.working_dir)
    if args.non_blocking:
        return _run_detached(args, runtime_env)
    _signals.install()  # before anything starts: a Ctrl-C at any moment stops swell in order
    if args.reload:
        # Watching before the first import: an edit made while the app starts is not missed.
        watch_and_redeploy(
            Path.cwd(),
            _run_document(args, runtime_env),
            _submit_when_serving,
            _signals.stop_requested,
        )
        print(f"swell: watching {Path.cwd()} for changes (--reload)", flush=True)
    if _is_config_file(args.import_path) or runtime_env is not None:
        if _is_config_file(args.import_path):
            config = apply_default_runtime_env(load_config_file(args.import_path), runtime_env)
        else:
            document = _run_document(args, runtime_env)
            document["http_options"] = {"host": args.host, "port": args.port}
            config = validate_model(ServeConfig, document, "the command line")
        # The config's gRPC options, else the command line's (--grpc-port ...).
        grpc = config.grpc_options if "grpc_options" in config.model_fields_set else None
        _start_in_process(args, config.http_options, config.proxy_location, grpc)
        try:
            api.run_config(config)
        except BaseException:
            api.shutdown()
            raise
        host, port = config.http_options.host, config.http_options.port
        served = [(app.name, app.route_prefix or "") for app in config.applications]
    else:
        app = load_application(args.import_path)
        _start_in_process(args, {"host": args.host, "port": args.port})
        try:
            api.run(app, name=args.name, route_prefix=args.route_prefix)
        except BaseException:
            api.shutdown()
            raise
        host, port = args.host, args.port
        served = [(args.name, args.route_prefix or "")]
    for name, prefix in served:
        print(
            f"swell: application '{name}' is serving at http://{host}:{port}{prefix} "
            "(Ctrl-C stops it)",
            flush=True,
        )
    _serving.set()
    api._serve_until_signalled()
    return 0


_serving = threading.Event()


def _submit_when_serving(document: dict[str, Any]) -> None:
    """--reload's redeploy: waits for the first deploy (an edit during it comes after)."""
    while not _serving.wait(0.2):
        if _signals.stop_requested.is_set():
            return
    instance = api._instance
    if instance is not None:
        instance.submit_config_threadsafe(document)


def _run_detached(args: argparse.Namespace, runtime_env: dict[str, Any] | None) -> int:
    """`swell run --non-blocking`: a detached instance, as `swell start` makes, serving the app;
    returns once every application is RUNNING (`swell shutdown` stops it)."""
    document = _run_document(args, runtime_env)
    http = document.setdefault("http_options", {})
    http.setdefault("host", args.host)
    http.setdefault("port", args.port)
    args.host, args.port = http["host"], http["port"]
    # The instance serves the document's gRPC options from its start (they cannot change later).
    args.grpc_options_json = json.dumps(
        {**document.get("grpc_options", {}), **_grpc_options_of(args)}
    )
    args.log_file, args.block = None, False
    _cmd_start(args)
    host = "127.0.0.1" if args.admin_host in ("0.0.0.0", "") else args.admin_host
    address = f"http://{host}:{args.admin_port}"
    return _deploy_document(address, resolve_token(address), document, _DEPLOY_TIMEOUT_S)


def _cmd_serve_detached(args: argparse.Namespace) -> int:
    """The process ``swell start`` leaves running: an instance with no app until a deploy."""
    if getattr(args, "app_dir", None):
        use_app_dir(args.app_dir)
    _signals.install()
    _start_in_process(args, {"host": args.host, "port": args.port})
    print("swell: ready", flush=True)
    api._serve_until_signalled()
    return 0


def _default_log_path(args: argparse.Namespace) -> Path:
    """Under the state dir, else in the user's private runtime directory: never a predictable
    shared path another user could plant a symlink at."""
    if args.state_dir:
        return private_dir(args.state_dir, "--state-dir") / "swell.log"
    return runtime_dir() / f"swell-{args.admin_port}.log"


def _cmd_start(args: argparse.Namespace) -> int:
    if args.block:
        # In a container (a KubeRay head pod): swell is the process the container waits on,
        # logs to its output, and drains on the SIGTERM Kubernetes sends.
        return _cmd_serve_detached(args)
    # Asked over loopback, where the token this user's instance leaves is found (an admin API
    # on every interface, as on a Kubernetes head pod, answers there too).
    local_host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(
        args.admin_host, args.admin_host
    )
    address = f"http://{local_host}:{args.admin_port}"
    chosen_token = _admin_token_from(args)
    try:
        api.fetch_status(address, chosen_token)
    except ControllerUnavailableError:
        pass
    except SwellError:
        raise SwellError(
            f"something already answers at {address}; stop it or pick --admin-port"
        ) from None
    else:
        raise SwellError(f"swell is already running at {address}; `swell shutdown` stops it.")
    # A bad certificate file is reported here, not in the detached process's log.
    validate_model(
        ControllerOptions,
        {k: getattr(args, k) for k in ("tls_cert", "tls_key", "tls_ca") if getattr(args, k)},
        "the command line",
    )
    load_cluster_tls(args.tls_cert, args.tls_key, args.tls_ca)
    if args.address:
        return _start_on_ray(args, address)
    log_path = Path(args.log_file) if args.log_file else _default_log_path(args)
    command = [
        sys.executable,
        "-m",
        "swell",
        "_serve",
        "--host",
        args.host,
        "--port",
        str(args.port),
        "--admin-host",
        args.admin_host,
        "--admin-port",
        str(args.admin_port),
    ]
    if args.admin_token_file:
        command += ["--admin-token-file", str(Path(args.admin_token_file).expanduser().resolve())]
    if args.state_dir:
        command += ["--state-dir", str(Path(args.state_dir).resolve())]
    if args.address:
        command += ["--address", args.address]
    for flag in ("tls_cert", "tls_key", "tls_ca"):
        if getattr(args, flag):
            command += [f"--{flag.replace('_', '-')}", str(Path(getattr(args, flag)).resolve())]
    if getattr(args, "app_dir", None):
        command += ["--app-dir", str(Path(args.app_dir).expanduser().resolve())]
    grpc = _grpc_options_of(args)
    if grpc:
        command += ["--grpc-options-json", json.dumps(grpc)]
    log_fd = open_private_log(log_path)
    try:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that started it
            cwd=os.getcwd(),
        )
    finally:
        os.close(log_fd)
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-15:]
            raise SwellError("swell failed to start:\n" + "\n".join(tail))
        try:
            api.fetch_status(address, chosen_token)
        except (ControllerUnavailableError, SwellError):
            time.sleep(_POLL_S)
            continue
        print(
            f"swell: started (pid {process.pid}); HTTP on {args.host}:{args.port}, admin API "
            f"on {address}, log in {log_path}"
        )
        return 0
    process.terminate()
    raise SwellError(f"swell did not answer at {address} within {_START_DEADLINE_S}s")


def _start_on_ray(args: argparse.Namespace, address: str) -> int:
    """`swell start --address`: the controller is a detached actor on the cluster's head node;
    this command creates it (unless it runs), waits until it serves, and returns."""
    _start_in_process(args, {"host": args.host, "port": args.port})
    instance = api._instance
    pid = getattr(instance, "pid", None)
    api._at_exit()  # disconnect; the actor keeps running
    print(
        f"swell: started on the Ray cluster (controller actor pid {pid} on the head node); "
        f"HTTP on {args.host}:{args.port} on every node, admin API on {address}"
    )
    return 0


def _cmd_deploy(args: argparse.Namespace) -> int:
    load_config_file(args.config)  # fail fast, before the controller is asked
    document = yaml.safe_load(Path(args.config).read_text())
    token = resolve_token(args.address, args.token_file)
    return _deploy_document(args.address, token, document, args.timeout)


def _deploy_document(
    address: str, token: str | None, document: dict[str, Any], timeout_s: float
) -> int:
    """PUT a config, then show each application's status until all run (or one fails)."""
    config = validate_model(ServeConfig, document, "config")
    api.admin_request(address, "PUT", "/api/serve/applications/", token, document)
    names = [app.name for app in config.applications]
    print(f"swell: deploying {', '.join(names) or 'no applications'}")
    deadline = time.monotonic() + timeout_s
    shown: dict[str, str] = {}
    while True:
        status = api.fetch_status(address, token)["applications"]
        for name in names:
            state = status.get(name, {}).get("status", "DEPLOYING")
            if shown.get(name) != state:
                print(f"  {name}: {state}", flush=True)
                shown[name] = state
        failed = [n for n in names if shown.get(n) == "DEPLOY_FAILED"]
        if failed:
            messages = "\n".join(f"{n}: {status[n]['message']}" for n in failed)
            raise DeploymentFailedError(f"deploy failed:\n{messages}")
        if all(shown.get(n) == "RUNNING" for n in names):
            print("swell: every application is running")
            return 0
        if time.monotonic() > deadline:
            raise SwellError(
                f"not every application was running after {timeout_s}s; see `swell status`"
            )
        time.sleep(_POLL_S)


def _cmd_config(args: argparse.Namespace) -> int:
    config = api.fetch_status(args.address, resolve_token(args.address, args.token_file)).get(
        "deployed_config"
    )
    if config is None:
        print("# no config has been deployed to this instance (apps came from swell run)")
        return 0
    print(yaml.safe_dump(config, sort_keys=False), end="")
    return 0


def _cmd_shutdown(args: argparse.Namespace) -> int:
    pid = api.fetch_status(args.address, resolve_token(args.address, args.token_file))[
        "controller_info"
    ]["pid"]
    token = resolve_token(args.address, args.token_file)
    api.admin_request(args.address, "DELETE", "/api/serve/applications/", token, timeout_s=300)
    api.admin_request(args.address, "POST", "/api/swell/shutdown", token)
    deadline = time.monotonic() + _START_DEADLINE_S
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            print("swell: shut down")
            return 0
        time.sleep(_POLL_S)
    raise SwellError(f"swell (pid {pid}) did not stop within {_START_DEADLINE_S}s")


def _cmd_build(args: argparse.Namespace) -> int:
    use_app_dir(args.app_dir)
    text = yaml.safe_dump(build_config(args.import_paths), sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    """The status page's address, carrying the read-only view token in its fragment."""
    token = resolve_token(args.address, args.token_file)
    if token is None:
        raise SwellError(
            f"no admin token found for {args.address}: pass --token-file (a local instance "
            "leaves its token for the user who started it)"
        )
    view = view_token(token)
    if args.scrape_token:
        print(view)
    else:
        address = args.address if "://" in args.address else f"http://{args.address}"
        print(f"{address.rstrip('/')}{DASHBOARD_PATH}#view={view}")
    return 0


def _print_status(status: dict[str, Any]) -> None:
    for name, proxy in status.get("proxies", {}).items():
        restarts = proxy.get("restarts") or 0
        print(
            f"ingress {name}: HAProxy {proxy.get('version')} pid {proxy.get('pid')} "
            f"on {proxy.get('address')} ({proxy.get('status')}"
            + (f", restarted {restarts}x" if restarts else "")
            + ")"
        )
        if proxy.get("last_error"):
            print(f"  last error: {proxy['last_error']}")
    if status.get("logs_dir"):
        print(f"logs: {status['logs_dir']} (swell logs prints them)")
    applications = status.get("applications", {})
    if not applications:
        print("no applications")
    for app in applications.values():
        print(f"app {app['name']}: {app['status']}  route_prefix={app['route_prefix']}")
        for dep in app["deployments"].values():
            states = ", ".join(f"{k}={v}" for k, v in sorted(dep["replica_states"].items()))
            print(
                f"  deployment {dep['name']}: {dep['status']} "
                f"(target {dep['target_replicas']}; {states or 'no replicas'})"
            )
            for replica in dep["replicas"]:
                node = f" node={replica['node_id']}" if replica.get("node_id") else ""
                print(
                    f"    replica {replica['replica_id']}: {replica['state']} "
                    f"pid={replica['pid']} address={replica['address']}{node}"
                )
            if dep.get("message"):
                print("    message: " + dep["message"].replace("\n", "\n      "))


def _cmd_logs(args: argparse.Namespace) -> int:
    token = resolve_token(args.address, args.token_file)
    return print_logs(args.address, token, args.app, args.deployment, args.follow)


def _cmd_status(args: argparse.Namespace) -> int:
    status = api.fetch_status(args.address, resolve_token(args.address, args.token_file))
    if args.json:
        print(json.dumps(status, indent=2))
    elif args.yaml:
        print(yaml.safe_dump(ray_shaped_status(status), sort_keys=False), end="")
    else:
        _print_status(status)
    return 0


def ray_shaped_status(status: dict[str, Any]) -> dict[str, Any]:
    """The status as Ray's `serve status` prints it: proxies, applications, deployments."""
    applications = {}
    for name, app in status.get("applications", {}).items():
        applications[name] = {
            "status": app.get("status"),
            "message": app.get("message", ""),
            "last_deployed_time_s": app.get("last_deployed_time_s"),
            "deployments": {
                dname: {
                    "status": dep.get("status"),
                    "status_trigger": dep.get("status_trigger"),
                    "replica_states": dep.get("replica_states", {}),
                    "message": dep.get("message", ""),
                }
                for dname, dep in app.get("deployments", {}).items()
            },
        }
    return {
        "proxies": {node: proxy.get("status") for node, proxy in status.get("proxies", {}).items()},
        "applications": applications,
        "target_capacity": status.get("target_capacity"),
    }


def _add_instance_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=_DEFAULT_HTTP.host, help="HTTP host (%(default)s)")
    parser.add_argument(
        "--port", type=int, default=_DEFAULT_HTTP.port, help="HTTP port (%(default)s)"
    )
    parser.add_argument(
        "--admin-host", default=_DEFAULT_CONTROLLER.admin_host, help="admin API host"
    )
    parser.add_argument(
        "--admin-port",
        type=int,
        default=_DEFAULT_CONTROLLER.admin_port,
        help="admin API port (%(default)s)",
    )
    parser.add_argument(
        "--admin-token-file",
        help="a file holding the admin API's bearer token (default: a random token, written "
        "mode 0600 where the CLI finds it)",
    )
    parser.add_argument(
        "--state-dir",
        help="checkpoint here; replicas and HAProxy then outlive the controller, and a start "
        "on the same directory adopts them",
    )
    parser.add_argument(
        "--address",
        help="run on this Ray cluster: 'auto' (RAY_ADDRESS, else the local `ray start` "
        "cluster) or the GCS host:port; replicas become Ray actors and every node gets an "
        "HAProxy (needs `pip install 'swell[ray]'`)",
    )
    parser.add_argument(
        "--tls-cert",
        help="a PEM certificate for swell's internal listeners (replicas' data plane, HTTP and "
        "control ports): HAProxy, handles and the controller then reach replicas over TLS. "
        "The same path must hold it on every node; needs --tls-key",
    )
    parser.add_argument("--tls-key", help="the unencrypted PEM key of --tls-cert")
    parser.add_argument(
        "--tls-ca",
        help="the PEM CA that --tls-cert is verified against (default: --tls-cert itself, "
        "for a self-signed cluster certificate)",
    )
    parser.add_argument("--grpc-port", type=int, help="gRPC port (grpc_options.port; default 9000)")
    parser.add_argument(
        "--grpc-servicer-functions",
        action="append",
        metavar="IMPORT_PATH",
        help="an add_XServicer_to_server function to serve over gRPC (repeat for several); "
        "without any, no gRPC is served",
    )


def _add_app_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-d",
        "--app-dir",
        default=".",
        help="directory to import the application from (%(default)s); replicas import from it too",
    )


def _add_app_source_options(parser: argparse.ArgumentParser) -> None:
    """Ray's `serve run` flags for where the code comes from and its environment."""
    _add_app_dir_option(parser)
    parser.add_argument(
        "--runtime-env",
        help="a YAML file with the runtime_env (env_vars, working_dir) of every application "
        "that sets none",
    )
    parser.add_argument("--runtime-env-json", help="the same runtime_env as a JSON string")
    parser.add_argument(
        "--working-dir",
        help="a local directory the replicas run in and import from (overrides the "
        "runtime_env's working_dir)",
    )


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-a", "--address", default=_DEFAULT_ADDRESS, help="admin API address (%(default)s)"
    )
    parser.add_argument(
        "--token-file",
        help="a file holding the admin API's token (default: the one a local instance on "
        "that port left for this user)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swell", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve an application or config file in the foreground")
    run.add_argument(
        "import_path",
        help="module:attribute of an Application (e.g. examples.hello:app), or a config "
        "file (.yaml) whose http_options replace --host/--port",
    )
    _add_instance_options(run)
    run.add_argument("--name", default=_DEFAULT_RUN.name, help="application name (%(default)s)")
    run.add_argument(
        "--route-prefix", default=_DEFAULT_RUN.route_prefix, help="route prefix (%(default)s)"
    )
    run.add_argument(
        "--reload",
        action="store_true",
        help="redeploy (replacing every replica) when a .py file under the working "
        "directory changes",
    )
    run.add_argument(
        "--non-blocking",
        action="store_true",
        help="start a detached instance serving it and return once it runs "
        "(`swell shutdown` stops it)",
    )
    _add_app_source_options(run)
    run.set_defaults(handler=_cmd_run)

    start = commands.add_parser("start", help="start a detached swell instance")
    _add_instance_options(start)
    start.add_argument(
        "--log-file",
        help="where the instance logs (default: a temp file); with --address the controller "
        "is a Ray actor and logs where Ray keeps its actors' logs",
    )
    start.add_argument(
        "--block",
        action="store_true",
        help="serve in the foreground instead of detaching, logging to standard output "
        "(for containers, like `ray start --block`); SIGTERM or SIGINT drains and stops it",
    )
    start.set_defaults(handler=_cmd_start)

    serve = commands.add_parser("_serve", help=argparse.SUPPRESS)
    _add_instance_options(serve)
    serve.add_argument("--app-dir")
    serve.add_argument("--grpc-options-json", help=argparse.SUPPRESS)
    serve.set_defaults(handler=_cmd_serve_detached)

    deploy = commands.add_parser("deploy", help="apply a config file to a running instance")
    deploy.add_argument("config", help="the config file (serveConfigV2 field names)")
    _add_client_options(deploy)
    deploy.add_argument(
        "--timeout",
        type=float,
        default=_DEPLOY_TIMEOUT_S,
        help="seconds to wait for RUNNING (%(default)s)",
    )
    deploy.set_defaults(handler=_cmd_deploy)

    status = commands.add_parser("status", help="show applications, deployments and replicas")
    _add_client_options(status)
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.add_argument(
        "--yaml", action="store_true", help="print it as Ray's `serve status` does (YAML)"
    )
    status.set_defaults(handler=_cmd_status)

    dashboard = commands.add_parser(
        "dashboard", help="print the status page's address (with a read-only token)"
    )
    _add_client_options(dashboard)
    dashboard.add_argument(
        "--scrape-token",
        action="store_true",
        help="print only the read-only token, for Prometheus to scrape /metrics with",
    )
    dashboard.set_defaults(handler=_cmd_dashboard)

    logs = commands.add_parser(
        "logs", help="print the instance's logs (HAProxy, controller, replicas) in time order"
    )
    _add_client_options(logs)
    logs.add_argument("app", nargs="?", help="only this application's lines")
    logs.add_argument("deployment", nargs="?", help="only this deployment's replicas")
    logs.add_argument(
        "-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C"
    )
    logs.set_defaults(handler=_cmd_logs)

    config = commands.add_parser("config", help="print the config in force")
    _add_client_options(config)
    config.set_defaults(handler=_cmd_config)

    shutdown = commands.add_parser("shutdown", help="remove every app and stop the instance")
    _add_client_options(shutdown)
    shutdown.add_argument(
        "-y", "--yes", action="store_true", help="accepted for Ray's CLI; swell never asks"
    )
    shutdown.set_defaults(handler=_cmd_shutdown)

    build = commands.add_parser("build", help="write a config file for applications")
    build.add_argument("import_paths", nargs="+", help="module:attribute of each Application")
    build.add_argument(
        "-o", "--output", "--output-path", help="file to write (default: standard output)"
    )
    _add_app_dir_option(build)
    build.set_defaults(handler=_cmd_build)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)
    except SwellError as error:
        print(f"swell: error: {error}", file=sys.stderr)
        code = 1
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
