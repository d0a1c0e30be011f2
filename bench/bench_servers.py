"""Which HTTP server a replica should run: uvicorn, swell's own, Granian, on the ceiling's bytes.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_servers.py [--duration 5] [--concurrency 1,64] [--rounds 2]
        [--servers uvicorn,swell,granian]

Each server serves ``bench/_ceiling_app.py`` (the hello bytes at ``/``, 32 chunks at
``/stream``) in two processes behind HAProxy with swell's rendered settings, and alone (wrk
straight at one process: its bare ceiling). Servers alternate within each round (A B C A B C),
so a neighbour's load hits all alike. Besides req/s and latency, each run prints the server
processes' CPU µs per request (and HAProxy's), from ``/proc``. Granian is measured only if it
is installed (``pip install granian``); swell does not depend on it.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import (  # noqa: E402
    HOST,
    READY_DEADLINE_S,
    RESULTS_DIR,
    WARMUP_S,
    alive,
    ceiling_server,
    free_port,
    parse_wrk,
    run_wrk,
    server_command,
    stop_process,
    wait_for_200,
)
from bench.bench_all import cpu_ticks, descendants  # noqa: E402

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PATHS = {"hello": "/?name=Ada", "stream": "/stream"}


@contextlib.contextmanager
def bare_server(server: str, workdir: Path, pids: list[int]) -> Iterator[str]:
    """One server process, no HAProxy; yields its base URL."""
    port = free_port()
    with (workdir / f"bare-{server}.log").open("wb") as log:
        proc = subprocess.Popen(
            server_command(server, port), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
        )
        try:
            wait_for_200(f"http://{HOST}:{port}/-/swell/ready", READY_DEADLINE_S, alive(proc))
            pids.append(proc.pid)
            yield f"http://{HOST}:{port}"
        finally:
            stop_process(proc)


def _cpu_us_per_request(pids: list[int], before: dict[int, int], requests: int) -> dict[str, float]:
    """Server processes' and HAProxy's CPU µs per request (HAProxy's worker is a child)."""
    spent: dict[str, float] = {}
    for pid, ticks in before.items():
        label = "haproxy" if "haproxy" in _cmdline(pid) else "server"
        us = (cpu_ticks(pid) - ticks) * 1e6 / _TICKS_PER_S
        spent[label] = spent.get(label, 0.0) + us / max(requests, 1)
    return spent


def _cmdline(pid: int) -> str:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    return ""


def _all_pids(pids: list[int]) -> list[int]:
    found = set(pids)
    for pid in pids:
        found |= descendants(pid)
    return sorted(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--servers", default="uvicorn,swell,granian")
    parser.add_argument("--workloads", default="hello,stream")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    if "granian" in servers and importlib.util.find_spec("granian") is None:
        print("granian is not installed: skipped (pip install granian)")
        servers.remove("granian")
    levels = [int(c) for c in args.concurrency.split(",")]
    workloads = args.workloads.split(",")
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="swell-bench-servers-") as tmp:
        for setup in ("haproxy", "bare"):
            for workload in workloads:
                for concurrency in levels:
                    print(f"{setup} {workload} c={concurrency}", flush=True)
                    for round_ in range(args.rounds):
                        for server in servers:
                            pids: list[int] = []
                            with (
                                ceiling_server(Path(tmp), server, pids)
                                if setup == "haproxy"
                                else bare_server(server, Path(tmp), pids)
                            ) as base:
                                url = base.split("/?")[0] + PATHS[workload]
                                watched = _all_pids(pids)
                                run_wrk(url, concurrency, WARMUP_S)
                                before = {pid: cpu_ticks(pid) for pid in watched}
                                output = run_wrk(url, concurrency, args.duration)
                                result = parse_wrk(server, concurrency, output)
                                requests = int(result.requests_per_s * args.duration)
                                cpu = _cpu_us_per_request(watched, before, requests)
                            print(
                                f"  {server:8s} {result.requests_per_s:9.0f} req/s  "
                                f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  "
                                f"errors {result.errors}  CPU µs/request: "
                                + ", ".join(f"{k} {v:.1f}" for k, v in cpu.items()),
                                flush=True,
                            )
                            rows.append(
                                {
                                    "setup": setup,
                                    "workload": workload,
                                    "concurrency": concurrency,
                                    "round": round_,
                                    "server": server,
                                    "req_s": result.requests_per_s,
                                    "p50_ms": result.p50_ms,
                                    "p99_ms": result.p99_ms,
                                    "cpu_us": cpu,
                                }
                            )
    _summary(rows, servers)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"servers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(rows, indent=2))
    print(f"results: {out}")


def _summary(rows: list[dict[str, object]], servers: list[str]) -> None:
    print("\n| setup | workload | c | " + " | ".join(servers) + " | ÷ uvicorn |")
    print("|---|---|---:|" + "---:|" * (len(servers) + 1))
    keys = sorted({(r["setup"], r["workload"], r["concurrency"]) for r in rows}, key=str)
    for setup, workload, concurrency in keys:
        cells = []
        median: dict[str, float] = {}
        for server in servers:
            mine = [
                r
                for r in rows
                if (r["setup"], r["workload"], r["concurrency"], r["server"])
                == (setup, workload, concurrency, server)
            ]
            rps = statistics.median(float(r["req_s"]) for r in mine)  # type: ignore[arg-type]
            cpu = statistics.median(r["cpu_us"].get("server", 0.0) for r in mine)  # type: ignore[attr-defined]
            median[server] = rps
            cells.append(f"{rps:,.0f} req/s, {cpu:.1f} µs")
        base = median.get("uvicorn")
        ratios = (
            ", ".join(f"{s} {median[s] / base:.2f}" for s in servers if s != "uvicorn")
            if base
            else "-"
        )
        print(f"| {setup} | {workload} | {concurrency} | " + " | ".join(cells) + f" | {ratios} |")


if __name__ == "__main__":
    main()
