"""Every workload against its ceiling in one command: noop, compose, stream, stream over a handle.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_all.py [--duration 5] [--concurrency 1,64] [--rounds 2]

The ceiling is HAProxy (swell's rendered settings) before two bare uvicorn processes
(``_ceiling_app.py``): the hello bytes at ``/``, 32 chunks at ``/stream``. swell runs, in this
process, ``noop`` (examples/hello.py, 2 replicas), ``compose`` (1 ingress replica making one
handle call per request to 2 model replicas, Ray's benchmark shape), ``stream`` (2 replicas
streaming 32 chunks straight to the client) and ``stream-handle`` (1 ingress relaying the 32
chunks of a model's async generator, 2 model replicas: the LLM path). At each concurrency the
ceiling and swell alternate (A B A B, ``--rounds`` times each), so a neighbour's load on a
shared machine hits both alike; read the ratios. ``--ray-serve`` adds Ray Serve in HA mode
(one local Ray node, ``_rayserve_local.py``, the same apps written for Ray) as a third target
in every round (A B C), and a table of swell ÷ Ray Serve.

Beside req/s and latency, each run reads ``/proc/<pid>/stat`` (utime + stime) of every process
serving it before and after, and prints CPU ms per request per process: HAProxy, each
deployment's replicas, and this process (the controller). Results also go to
``bench/results/all-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    EXPECTED_BODY,
    RESULTS_DIR,
    WrkResult,
    ceiling_server,
    check_body,
    ray_serve_process,
)
from bench.apps import (  # noqa: E402
    STREAM_CHUNKS,
    compose_app,
    direct_stream_app,
    stream_app,
    stream_body,
)
from bench.bench_compose import deploy, replica_pids, swell_running  # noqa: E402
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
WORKLOADS = ("noop", "compose", "stream", "stream-handle")


# CPU accounting ------------------------------------------------------------------------------


def cpu_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in clock ticks; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _label(pid: int) -> str:
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        if "haproxy" in cmdline:
            return "haproxy"
        if "uvicorn" in cmdline:
            return "uvicorn"
    return "other"


@dataclass
class Processes:
    """The processes serving one target, labelled: their CPU is summed per label."""

    labels: dict[int, str]

    def ticks(self) -> dict[int, int]:
        return {pid: cpu_ticks(pid) for pid in self.labels}

    def ms_per_request(self, before: dict[int, int], requests: int) -> dict[str, float]:
        after = self.ticks()
        per_label: dict[str, float] = {}
        for pid, label in self.labels.items():
            ms = (after[pid] - before[pid]) * 1000 / _TICKS_PER_S
            per_label[label] = per_label.get(label, 0.0) + ms / max(requests, 1)
        per_label["total"] = sum(per_label.values())
        return per_label


# Runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    wrk: WrkResult
    cpu_ms: dict[str, float]


@dataclass
class Level:
    workload: str
    concurrency: int
    ceiling: list[Run] = field(default_factory=list)
    swell: list[Run] = field(default_factory=list)
    rayserve: list[Run] = field(default_factory=list)


def measured(target: str, url: str, concurrency: int, duration_s: int, processes: Processes) -> Run:
    before_holder: dict[int, int] = {}

    def start() -> None:
        before_holder.update(processes.ticks())

    result = _measure_with(target, url, concurrency, duration_s, start)
    return Run(result, processes.ms_per_request(before_holder, result.requests))


def _measure_with(
    target: str, url: str, concurrency: int, duration_s: int, on_start: Callable[[], None]
) -> WrkResult:
    """``measure`` with the counters read after the warm-up, right before the measured run."""
    from bench import _common

    _common.run_wrk(url, concurrency, _common.WARMUP_S)
    on_start()
    result = _common.parse_wrk(target, concurrency, _common.run_wrk(url, concurrency, duration_s))
    print(
        f"  {target:14s} c={concurrency:<4d} {result.requests_per_s:9.0f} req/s  "
        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  errors {result.errors}",
        flush=True,
    )
    return result


# Tables --------------------------------------------------------------------------------------


def _rates(runs: list[Run]) -> str:
    return " / ".join(f"{r.wrk.requests_per_s:,.0f}" for r in runs)


def _cpu(runs: list[Run]) -> str:
    labels = sorted({k for r in runs for k in r.cpu_ms if k != "total"})
    parts = [f"{statistics.mean(r.cpu_ms.get(k, 0.0) for r in runs):.3f} {k}" for k in labels]
    total = statistics.mean(r.cpu_ms["total"] for r in runs)
    return f"**{total:.3f}** ({', '.join(parts)})"


def _ratios(runs: list[Run], against: list[Run]) -> list[float]:
    """req/s of each run over the run it was paired with in the same round."""
    return [
        a.wrk.requests_per_s / b.wrk.requests_per_s if b.wrk.requests_per_s else 0.0
        for a, b in zip(runs, against, strict=True)
    ]


def _latency(runs: list[Run]) -> str:
    p50 = statistics.median(r.wrk.p50_ms for r in runs)
    p99 = statistics.median(r.wrk.p99_ms for r in runs)
    return f"{p50:.2f} / {p99:.2f}"


def ray_table(levels: list[Level]) -> str:
    """swell against Ray Serve HA, measured in the same rounds (``--ray-serve``)."""
    lines = [
        "| workload | c | Ray Serve HA req/s | swell ÷ Ray Serve | Ray p50 / p99 ms "
        "| Ray CPU ms/req (all of Ray's processes) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        if not level.rayserve:
            continue
        ratios = _ratios(level.swell, level.rayserve)
        cpu = statistics.mean(r.cpu_ms["total"] for r in level.rayserve)
        lines.append(
            f"| {level.workload} | {level.concurrency} | {_rates(level.rayserve)} "
            f"| {' / '.join(f'{r:.1f}' for r in ratios)} | {_latency(level.rayserve)} "
            f"| {cpu:.3f} |"
        )
    return "\n".join(lines)


def table(levels: list[Level]) -> str:
    lines = [
        "| workload | c | ceiling req/s | swell req/s | swell ÷ ceiling | ceiling p50 / p99 ms "
        "| swell p50 / p99 ms | swell CPU ms/req | ceiling CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    for level in levels:
        ratios = _ratios(level.swell, level.ceiling)
        errors = sum(r.wrk.errors for r in level.ceiling + level.swell)
        lines.append(
            f"| {level.workload} | {level.concurrency} | {_rates(level.ceiling)} "
            f"| {_rates(level.swell)} | {' / '.join(f'{r:.2f}' for r in ratios)} "
            f"| {_latency(level.ceiling)} | {_latency(level.swell)} | {_cpu(level.swell)} "
            f"| {_cpu(level.ceiling)} | {errors} |"
        )
    return "\n".join(lines)


# Main ----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _ceiling(tmp: Path) -> Iterator[tuple[str, Processes]]:
    before = descendants(os.getpid())
    with ceiling_server(tmp) as url:
        pids = descendants(os.getpid()) - before
        yield url, Processes({pid: f"{_label(pid)}" for pid in pids})


def _swell_processes(app: str, before: set[int]) -> Processes:
    labels = {os.getpid(): "driver"}
    for deployment, pids in replica_pids(app).items():
        for pid in pids:
            labels[pid] = deployment.lower()
    for pid in descendants(os.getpid()) - before:
        if pid not in labels and _label(pid) == "haproxy":
            labels[pid] = "haproxy"
    return Processes(labels)


@contextlib.contextmanager
def _ray_serve(enabled: bool) -> Iterator[tuple[dict[str, str], Processes | None]]:
    """Ray Serve HA on one local node (``_rayserve_local.py``), when asked for."""
    if not enabled:
        yield {}, None
        return
    script = Path(__file__).resolve().parent / "_rayserve_local.py"
    with ray_serve_process(script) as (started, pid):
        urls: dict[str, str] = started["urls"]
        for workload, url in urls.items():
            check_body(url, stream_body() if workload.startswith("stream") else EXPECTED_BODY)
        yield urls, Processes({p: "ray" for p in descendants(pid) | {pid}})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated wrk connections")
    parser.add_argument("--rounds", type=int, default=2, help="A B pairs per level")
    parser.add_argument(
        "--workloads", default=",".join(WORKLOADS), help=f"a subset of {','.join(WORKLOADS)}"
    )
    parser.add_argument(
        "--ray-serve",
        action="store_true",
        help="also measure Ray Serve HA (one local Ray node) in every round: A B C",
    )
    args = parser.parse_args()
    levels_c = [int(c) for c in args.concurrency.split(",") if c.strip()]
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads {sorted(unknown)}; choose from {', '.join(WORKLOADS)}")
    haproxy = find_haproxy_binary(None)
    header = (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, wrk -t1 -d{args.duration}s, "
        f"{args.rounds} interleaved rounds, HAProxy {haproxy_version(haproxy)}, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), "
        f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f} at start"
    )
    from examples.hello import app as hello_app

    apps = {
        "noop": (hello_app, EXPECTED_BODY, ""),
        "compose": (compose_app(1, 2), EXPECTED_BODY, ""),
        "stream": (direct_stream_app(2), stream_body(), "stream"),
        "stream-handle": (stream_app(1, 2), stream_body(), "stream"),
    }
    results: list[Level] = []
    with (
        tempfile.TemporaryDirectory(prefix="swell-bench-") as tmp,
        _ceiling(Path(tmp)) as (ceiling_url, ceiling_procs),
        _ray_serve(args.ray_serve) as (ray_urls, ray_procs),
    ):
        base = ceiling_url.split("/?")[0]
        before_swell = descendants(os.getpid())
        with swell_running() as port:
            for workload in workloads:
                app, expected, ceiling_path = apps[workload]
                name = "stream" if expected != EXPECTED_BODY else workload
                url = deploy(app, name, port, expected)
                processes = _swell_processes(name, before_swell)
                target = f"{base}/{ceiling_path}?n={STREAM_CHUNKS}" if ceiling_path else ceiling_url
                print(f"{workload}: {url} against {target}", flush=True)
                for c in levels_c:
                    level = Level(workload, c)
                    for _ in range(args.rounds):
                        level.ceiling.append(
                            measured("ceiling", target, c, args.duration, ceiling_procs)
                        )
                        level.swell.append(measured(workload, url, c, args.duration, processes))
                        if ray_procs is not None:
                            level.rayserve.append(
                                measured(
                                    "rayserve", ray_urls[workload], c, args.duration, ray_procs
                                )
                            )
                    results.append(level)
                swell.delete(name)
    markdown = table(results)
    if args.ray_serve:
        markdown += "\n\n" + ray_table(results)
    print(f"\n{header}\n\n{markdown}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"all-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "header": header,
                "table_markdown": markdown,
                "levels": [asdict(level) for level in results],
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
