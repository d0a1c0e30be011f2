"""The ``swell`` command: ``run`` serves an app in the foreground, ``status`` reports."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from swell import api
from swell._import_path import load_application
from swell.config import ControllerOptions, HTTPOptions, RunOptions
from swell.config_file import build_config, load_config_file
from swell.exceptions import SwellError

_DEFAULT_HTTP = HTTPOptions()
_DEFAULT_CONTROLLER = ControllerOptions()
_DEFAULT_RUN = RunOptions()


def _admin_url(host: str, port: int) -> str:
    return f"http://{host}:{port}"


def _cmd_run(args: argparse.Namespace) -> int:
    if args.import_path.endswith((".yaml", ".yml")):
        return _run_config_file(args)
    app = load_application(args.import_path)
    api.start(
        http_options={"host": args.host, "port": args.port},
        admin_host=args.admin_host,
        admin_port=args.admin_port,
    )
    try:
        api.run(app, name=args.name, route_prefix=args.route_prefix)
    except BaseException:
        api.shutdown()
        raise
    print(
        f"swell: application '{args.name}' is serving at "
        f"http://{args.host}:{args.port}{args.route_prefix} (Ctrl-C stops it)",
        flush=True,
    )
    api._serve_until_signalled()
    return 0


def _run_config_file(args: argparse.Namespace) -> int:
    config = load_config_file(args.import_path)
    api.start(
        http_options=config.http_options,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
    )
    try:
        api.run_config(config)
    except BaseException:
        api.shutdown()
        raise
    for app in config.applications:
        print(
            f"swell: application '{app.name}' is serving at http://{config.http_options.host}:"
            f"{config.http_options.port}{app.route_prefix or ''}",
            flush=True,
        )
    api._serve_until_signalled()
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    text = yaml.safe_dump(build_config(args.import_paths), sort_keys=False)
    if args.output:
        Path(args.output).write_text(text)
    else:
        print(text, end="")
    return 0


def _print_status(status: dict[str, Any]) -> None:
    for name, proxy in status.get("proxies", {}).items():
        print(
            f"ingress {name}: HAProxy {proxy.get('haproxy_version')} pid {proxy.get('pid')} "
            f"on {proxy.get('address')} ({proxy.get('status')})"
        )
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
                print(
                    f"    replica {replica['replica_id']}: {replica['state']} "
                    f"pid={replica['pid']} address={replica['address']}"
                )
            if dep.get("message"):
                print("    message: " + dep["message"].replace("\n", "\n      "))


def _cmd_status(args: argparse.Namespace) -> int:
    status = api.fetch_status(args.address)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print_status(status)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="swell", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="serve an application in the foreground")
    run.add_argument(
        "import_path",
        help="module:attribute of an Application (e.g. examples.hello:app), or a config "
        "file (.yaml) whose http_options and applications replace the flags below",
    )
    run.add_argument("--host", default=_DEFAULT_HTTP.host, help="HTTP host (default %(default)s)")
    run.add_argument(
        "--port", type=int, default=_DEFAULT_HTTP.port, help="HTTP port (default %(default)s)"
    )
    run.add_argument(
        "--name", default=_DEFAULT_RUN.name, help="application name (default %(default)s)"
    )
    run.add_argument(
        "--route-prefix",
        default=_DEFAULT_RUN.route_prefix,
        help="route prefix (default %(default)s)",
    )
    run.add_argument("--admin-host", default=_DEFAULT_CONTROLLER.admin_host, help="admin API host")
    run.add_argument(
        "--admin-port",
        type=int,
        default=_DEFAULT_CONTROLLER.admin_port,
        help="admin API port (default %(default)s)",
    )
    run.set_defaults(handler=_cmd_run)

    build = commands.add_parser("build", help="write a config file for applications")
    build.add_argument("import_paths", nargs="+", help="module:attribute of each Application")
    build.add_argument("-o", "--output", help="file to write (default: standard output)")
    build.set_defaults(handler=_cmd_build)

    status = commands.add_parser("status", help="show applications, deployments and replicas")
    status.add_argument(
        "--address",
        default=_admin_url(_DEFAULT_CONTROLLER.admin_host, _DEFAULT_CONTROLLER.admin_port),
        help="admin API address (default %(default)s)",
    )
    status.add_argument("--json", action="store_true", help="print the raw status document")
    status.set_defaults(handler=_cmd_status)
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
