"""The Ray engine beside the local engine and Ray Serve's HA mode: hello and compose, one proxy.

Usage (needs ``pip install 'swell[ray]'``, wrk, and for the Ray Serve rows ``pip install
'ray[serve]'`` in the same environment; without it they are skipped)::

    python bench/bench_ray.py [--duration 5] [--concurrency 1,16,64]

In one run: the ceiling (HAProxy + 2 bare uvicorn processes), swell with the local engine, swell
on a three-node Ray cluster started on this machine (``ray.cluster_utils``), and Ray Serve with
``RAY_SERVE_ENABLE_HA_PROXY=1`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` on the same cluster
shape. Requests go to the head node's proxy while the replicas run on the two worker nodes:
hello with one replica per worker, and compose with one ingress replica per worker and the model
on either (so handle calls cross nodes about half the time). Every target answers the same
bytes, and the same wrk measures each. Also: the time from the deploy call to hello's first 200
for each engine, and the memory (RSS) of every process swell adds to the Ray cluster. Results
go to stdout (markdown) and ``bench/results/ray-*.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
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
    parse_wrk,
    ray_serve_process,
    run_wrk,
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


# Seconds from the deploy call to hello's first 200, per engine.
FIRST_200: dict[str, float] = {}
# What each process swell adds to the Ray cluster holds (RSS, MiB), by kind.
MEMORY: dict[str, list[float]] = {}


def _deploy(on_ray: bool, port: int) -> dict[str, str]:
    urls = {}
    for name, app in _apps(on_ray).items():
        url = f"http://{HOST}:{port}/{name}{QUERY[1:]}"
        first: dict[str, float] = {}
        started = time.monotonic()
        poller = threading.Thread(target=_first_200_after, args=(url, started, first))
        poller.start()
        swell.run(app, name=name, route_prefix=f"/{name}")
        poller.join()
        if name == "hello":
            FIRST_200["ray" if on_ray else "local"] = first["s"]
        check_body(url)
        urls[name] = url
    return urls


def _first_200_after(url: str, started: float, result: dict[str, float]) -> None:
    wait_for_200(url, READY_DEADLINE_S * 4)
    result["s"] = time.monotonic() - started


def rss_mib(pid: int) -> float:
    """A process's resident memory, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


# Cores used per process group during one profiled wrk run, per engine ("where the cycles
# go": why an engine serves fewer requests on the same cores). wrk itself is not counted (its
# CPU time is read only from live processes).
CPU: dict[str, dict[str, float]] = {}
_TICKS = os.sysconf("SC_CLK_TCK")


def _group(pid: int) -> str:
    """What a process is, from its title (Ray names workers ``ray::<Class>``) or command."""
    try:
        cmd = (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return "gone"
    for needle, group in (
        ("haproxy", "haproxy"),
        ("swell._replica.main", "replica process"),
        ("uvicorn", "replica process"),
        ("ray::SwellReplica", "replica actor"),
        ("ray::HAProxyManager", "HAProxyManager actor"),
        ("ray::SwellController", "controller actor"),
        ("ray::ServeReplica", "replica process"),
        ("ray::ServeController", "controller actor"),
        ("wrk", "wrk"),
        ("raylet", "raylet"),
        ("gcs_server", "gcs_server"),
    ):
        if needle in cmd:
            return group
    return "ray's other processes" if "ray" in cmd else "other (driver, ...)"


def _cpu_by_group(root: int) -> dict[str, float]:
    """CPU seconds used so far by every descendant of ``root``, by group."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / _TICKS

    def under_root(pid: int) -> bool:
        while pid > 1:
            if pid == root:
                return True
            pid = parents.get(pid, 0)
        return False

    groups: dict[str, float] = {}
    for pid, seconds in times.items():
        if under_root(pid):
            key = _group(pid)
            groups[key] = groups.get(key, 0.0) + seconds
    return groups


def profile_cpu(engine: str, url: str, concurrency: int, duration_s: int) -> None:
    """One more wrk run at ``concurrency``, recording where the machine's CPU went."""
    before = _cpu_by_group(os.getpid())
    started = time.monotonic()
    result = parse_wrk(engine, concurrency, run_wrk(url, concurrency, duration_s))
    wall = time.monotonic() - started
    after = _cpu_by_group(os.getpid())
    used = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    CPU[engine] = {k: round(v / wall, 3) for k, v in sorted(used.items()) if v > 0.005}
    CPU[engine]["req/s"] = result.requests_per_s


def swell_memory() -> dict[str, list[float]]:
    """RSS of every process swell added to the cluster, by kind (from swell's status)."""
    status = swell.status().raw
    kinds: dict[str, list[float]] = {
        "controller actor": [rss_mib(status["controller_info"]["pid"])],
        "HAProxyManager actor": [],
        "haproxy": [],
        "replica actor": [],
        "replica process": [],
    }
    for proxy in status["proxies"].values():
        kinds["HAProxyManager actor"].append(rss_mib(proxy["actor_pid"]))
        kinds["haproxy"].append(rss_mib(proxy["pid"]))
    for app in status["applications"].values():
        for deployment in app["deployments"].values():
            for replica in deployment["replicas"]:
                if replica.get("pid"):
                    kinds["replica process"].append(rss_mib(replica["pid"]))
                    kinds["replica actor"].append(rss_mib(parent_of(replica["pid"])))
    return kinds


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
            urls = _deploy(True, ports[0])
            MEMORY.update(swell_memory())
            yield urls
        finally:
            swell.shutdown()
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()


@contextlib.contextmanager
def ray_serve_ha() -> Iterator[dict[str, str]]:
    """Ray Serve in HA mode on the same cluster shape, in its own process."""
    script = Path(__file__).resolve().parent / "_rayserve_cluster.py"
    with ray_serve_process(script) as (started, _):
        FIRST_200["rayserve"] = started["deploy_to_first_200_s"]
        yield started["urls"]


def has_ray_serve() -> bool:
    try:
        import ray.serve  # noqa: F401
    except ImportError:
        return False
    return True


def _ratio(a: WrkResult, b: WrkResult) -> str:
    return f"{a.requests_per_s / b.requests_per_s:.2f}" if b.requests_per_s else "-"


def table(rows: list[dict[str, WrkResult]]) -> str:
    lines = [
        "| app | c | ceiling req/s | local req/s | swell-ray req/s | Ray Serve HA req/s "
        "| ray/local | ray/Ray Serve | p50 ms (local, ray, Ray Serve) | errors (local, ray, RS) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        ceiling, local, on_ray = row["ceiling"], row["local"], row["ray"]
        serve = row.get("rayserve")
        lines.append(
            f"| {local.target.split('-')[0]} | {local.concurrency} "
            f"| {ceiling.requests_per_s:.0f} | {local.requests_per_s:.0f} "
            f"| {on_ray.requests_per_s:.0f} | {serve.requests_per_s if serve else 0:.0f} "
            f"| {_ratio(on_ray, local)} | {_ratio(on_ray, serve) if serve else '-'} "
            f"| {local.p50_ms:.2f}, {on_ray.p50_ms:.2f}, {serve.p50_ms if serve else 0:.2f} "
            f"| {local.errors}, {on_ray.errors}, {serve.errors if serve else '-'} |"
        )
    return "\n".join(lines)


def cpu_table(concurrency: int) -> str:
    """Cores used by each process group during one hello run at ``concurrency``."""
    groups = sorted({g for used in CPU.values() for g in used if g != "req/s"})
    engines = list(CPU)
    lines = [
        f"| cores used, hello c={concurrency} | " + " | ".join(engines) + " |",
        "|---|" + "---:|" * len(engines),
        "| req/s | " + " | ".join(f"{CPU[e]['req/s']:.0f}" for e in engines) + " |",
    ]
    for group in groups:
        lines.append(
            f"| {group} | " + " | ".join(f"{CPU[e].get(group, 0.0):.2f}" for e in engines) + " |"
        )

    def per_request_us(engine: str) -> str:
        used = sum(v for g, v in CPU[engine].items() if g != "req/s")
        rate = CPU[engine]["req/s"]
        return f"{used / rate * 1e6:.0f}" if rate else "-"

    lines.append(
        "| CPU µs per request (all of the above) | "
        + " | ".join(per_request_us(e) for e in engines)
        + " |"
    )
    return "\n".join(lines)


def memory_table() -> str:
    lines = [
        "| process (swell on Ray) | count | RSS MiB each (mean) | total MiB |",
        "|---|---:|---:|---:|",
    ]
    for kind, values in MEMORY.items():
        mean = sum(values) / len(values) if values else 0.0
        lines.append(f"| {kind} | {len(values)} | {mean:.0f} | {sum(values):.0f} |")
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
        engines: list[tuple[str, Any]] = [("local", local_swell), ("ray", ray_swell)]
        if has_ray_serve():
            engines.append(("rayserve", ray_serve_ha))
        else:
            print("ray.serve is not installed: no Ray Serve rows (pip install 'ray[serve]')")
        for engine, running in engines:
            with running() as urls:
                results[engine] = {
                    name: {c: measure(f"{name}-{engine}", url, c, args.duration) for c in levels}
                    for name, url in urls.items()
                }
                profile_cpu(engine, urls["hello"], max(levels), args.duration)
    rows = [
        {
            "ceiling": results["ceiling"]["hello"][c],
            "local": results["local"][name][c],
            "ray": results["ray"][name][c],
            **({"rayserve": results["rayserve"][name][c]} if "rayserve" in results else {}),
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
    print(
        "\nseconds from the deploy call to hello's first 200: "
        + ", ".join(f"{engine} {seconds:.2f}" for engine, seconds in FIRST_200.items())
    )
    print(f"\n{memory_table()}")
    print(f"\n{cpu_table(max(levels))}")
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"ray-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "deploy_to_first_200_s": FIRST_200,
                "cores_by_process_group": CPU,
                "rss_mib": MEMORY,
                **{
                    engine: {
                        app: {
                            c: {k: v for k, v in asdict(r).items() if k != "raw"}
                            for c, r in by_c.items()
                        }
                        for app, by_c in apps.items()
                    }
                    for engine, apps in results.items()
                },
            },
            indent=2,
        )
    )
    print(f"\nraw numbers: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
