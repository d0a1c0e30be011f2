"""The Ray engine beside the local engine on one machine: hello and compose, one proxy in front.

Usage (needs ``pip install 'swell[ray]'`` and wrk)::

    python bench/bench_ray.py [--duration 5] [--concurrency 1,16,64]

At each concurrency, interleaved: the ceiling (HAProxy + 2 bare uvicorn processes), swell with
the local engine, and swell on a three-node Ray cluster started on this machine
(``ray.cluster_utils``), requests sent to the head node's HAProxy while the replicas run on the
two worker nodes: hello with one replica per worker, and compose with one ingress replica per
worker and the model on either (so handle calls cross nodes about half the time). Every target
answers the same bytes. Results go to stdout (markdown) and ``bench/results/ray-*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from examples.hello import Hello  # noqa: E402

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    HOST,
    QUERY,
    READY_DEADLINE_S,
    RESULTS_DIR,
    WrkResult,
    ceiling_server,
    check_body,
    free_port,
    measure,
    wait_for_200,
)
from bench.apps import Ingress, Model  # noqa: E402
from swell._ray.cluster import HTTP_PORT_LABEL  # noqa: E402

# Every worker has one of each: one hello replica and one ingress replica per worker node.
_HELLO_SLOT = "bench_hello_slot"
_INGRESS_SLOT = "bench_ingress_slot"


def _apps(on_ray: bool) -> dict[str, swell.Application]:
    def placed(slot: str) -> dict[str, Any]:
        return {"ray_actor_options": {"num_cpus": 0.1, "resources": {slot: 1}}} if on_ray else {}

    model_options = {"ray_actor_options": {"num_cpus": 0.1}} if on_ray else {}
    return {
        "hello": Hello.options(num_replicas=2, **placed(_HELLO_SLOT)).bind("Hello"),
        "compose": Ingress.options(num_replicas=2, **placed(_INGRESS_SLOT)).bind(
            Model.options(num_replicas=1, **model_options).bind()
        ),
    }


def _deploy(on_ray: bool, port: int) -> dict[str, str]:
    urls = {}
    for name, app in _apps(on_ray).items():
        swell.run(app, name=name, route_prefix=f"/{name}")
        url = f"http://{HOST}:{port}/{name}{QUERY[1:]}"
        wait_for_200(url, READY_DEADLINE_S)
        check_body(url)
        urls[name] = url
    return urls


@contextlib.contextmanager
def local_swell() -> Iterator[dict[str, str]]:
    port = free_port()
    try:
        swell.start(http_options={"host": HOST, "port": port}, admin_port=0)
        yield _deploy(False, port)
    finally:
        swell.shutdown()


@contextlib.contextmanager
def ray_swell() -> Iterator[dict[str, str]]:
    """A head node (the proxy we measure through) and two workers holding the replicas."""
    import ray
    from ray.cluster_utils import Cluster

    ports = [free_port() for _ in range(3)]

    def node(port: int, slots: int) -> dict[str, Any]:
        return {
            "num_cpus": 2,
            "object_store_memory": 80 * 1024 * 1024,
            "labels": {HTTP_PORT_LABEL: str(port)},
            "resources": {_HELLO_SLOT: slots, _INGRESS_SLOT: slots},
        }

    cluster = Cluster(
        initialize_head=True, head_node_args={**node(ports[0], 0), "include_dashboard": False}
    )
    try:
        for port in ports[1:]:
            cluster.add_node(**node(port, 1))
        swell.start(
            http_options={"host": HOST, "port": ports[0]}, admin_port=0, address=cluster.address
        )
        try:
            yield _deploy(True, ports[0])
        finally:
            swell.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


def _ratio(a: WrkResult, b: WrkResult) -> str:
    return f"{a.requests_per_s / b.requests_per_s:.2f}" if b.requests_per_s else "-"


def table(rows: list[dict[str, WrkResult]]) -> str:
    lines = [
        "| app | c | ceiling req/s | local req/s | ray req/s | local/ceiling | ray/ceiling "
        "| ray/local | ray p50/p99 ms | errors (local, ray) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ceiling, local, on_ray = row["ceiling"], row["local"], row["ray"]
        lines.append(
            f"| {local.target.split('-')[0]} | {local.concurrency} "
            f"| {ceiling.requests_per_s:.0f} | {local.requests_per_s:.0f} "
            f"| {on_ray.requests_per_s:.0f} | {_ratio(local, ceiling)} | {_ratio(on_ray, ceiling)} "
            f"| {_ratio(on_ray, local)} | {on_ray.latency()} | {local.errors}, {on_ray.errors} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,16,64", help="wrk connection counts")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: dict[str, dict[str, dict[int, WrkResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="swell-bench-ray-") as workdir:
        with ceiling_server(Path(workdir)) as ceiling_url:
            results["ceiling"] = {
                "hello": {c: measure("ceiling", ceiling_url, c, args.duration) for c in levels}
            }
        # One engine at a time: the machine's cores are shared with everything measured.
        for engine, running in (("local", local_swell), ("ray", ray_swell)):
            with running() as urls:
                results[engine] = {
                    name: {c: measure(f"{name}-{engine}", url, c, args.duration) for c in levels}
                    for name, url in urls.items()
                }
    rows = [
        {
            "ceiling": results["ceiling"]["hello"][c],
            "local": results["local"][name][c],
            "ray": results["ray"][name][c],
        }
        for name in ("hello", "compose")
        for c in levels
    ]
    print(
        f"\nwrk -t1 -d{args.duration}s, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; ray: 3 nodes on this machine, requests to the head "
        "node's HAProxy, replicas on the two workers\n"
    )
    print(table(rows))
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                engine: {
                    app: {
                        c: {k: v for k, v in asdict(r).items() if k != "raw"}
                        for c, r in by_c.items()
                    }
                    for app, by_c in apps.items()
                }
                for engine, apps in results.items()
            },
            indent=2,
        )
    )
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
