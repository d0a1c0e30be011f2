"""Benchmark swell serving examples/hello.py against a bare-uvicorn ceiling behind the same HAProxy.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_hello.py [--duration 10] [--concurrency 1,16,64,256]

The ceiling is HAProxy (configured by swell's own renderer, so the settings are identical) in
front of two bare uvicorn processes returning the same bytes; the ratio swell/ceiling is what
swell's replica stack costs. Ceiling and swell are measured interleaved at each concurrency
because the machine is noisy. It also measures ``swell run`` startup time and idle memory.
Results go to stdout (markdown) and to ``bench/results/`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import subprocess
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

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    HOST,
    QUERY,
    READY_DEADLINE_S,
    RESULTS_DIR,
    STOP_DEADLINE_S,
    WrkResult,
    alive,
    ceiling_server,
    check_body,
    free_port,
    measure,
    stop_process,
    wait_for_200,
)
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402

IDLE_SETTLE_S = 2.0  # let the replicas finish start-up work before RSS is read


# swell serving the hello app -----------------------------------------------------------------


@contextlib.contextmanager
def swell_server() -> Iterator[str]:
    """swell serving examples/hello.py in this process; yields its URL."""
    from examples.hello import app

    port = free_port()
    try:
        swell.start(http_options={"host": HOST, "port": port}, admin_port=0)
        swell.run(app)  # returns once both replicas are healthy
        url = f"http://{HOST}:{port}{QUERY}"
        wait_for_200(url, READY_DEADLINE_S)  # HAProxy's own check may lag the controller's
        check_body(url)
        yield url
    finally:
        swell.shutdown()


# Startup time and idle memory of `swell run` -------------------------------------------------


def _stat(pid: int) -> tuple[str, int, str] | None:
    """(state, ppid, starttime) of a process, or None if it is gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(")") + 2 :].split()  # the name may contain spaces and parens
    return fields[0], int(fields[1]), fields[19]


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root`` (walked through /proc by ppid): pid -> starttime."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            children.setdefault(stat[1], []).append((int(entry), stat[2]))
    found: dict[int, str] = {}
    stack = [root]
    while stack:
        for pid, started in children.get(stack.pop(), []):
            found[pid] = started
            stack.append(pid)
    return found


def rss_kib(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it is gone or a zombie)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return "?"
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()[:120]


def _still_running(pid: int, started: str) -> bool:
    """True unless the process exited (a zombie counts as exited) or its PID was reused."""
    stat = _stat(pid)
    return stat is not None and stat[2] == started and stat[0] != "Z"


def measure_cli(workdir: Path) -> dict[str, Any]:
    """Seconds from launching ``swell run`` to the first 200, idle RSS, and a clean SIGINT."""
    swell_cli = Path(sys.executable).with_name("swell")
    launcher = [str(swell_cli)] if swell_cli.exists() else [sys.executable, "-m", "swell"]
    port, admin_port = free_port(), free_port()
    command = [
        *launcher,
        "run",
        "examples.hello:app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
    ]
    tree: dict[int, str] = {}
    with (workdir / "swell-cli.log").open("wb") as log:
        start = time.monotonic()
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_200(f"http://{HOST}:{port}{QUERY}", READY_DEADLINE_S, alive(proc))
            startup_s = time.monotonic() - start
            time.sleep(IDLE_SETTLE_S)  # settle only; readiness was established above
            tree = descendants(proc.pid)
            processes: list[dict[str, Any]] = [
                {"pid": pid, "rss_kib": rss_kib(pid), "command": _command(pid)}
                for pid in [proc.pid, *tree]
            ]
            stop_started = time.monotonic()
            exited_on_sigint = stop_process(proc, signal.SIGINT)
            deadline = time.monotonic() + STOP_DEADLINE_S
            while time.monotonic() < deadline and any(
                _still_running(pid, started) for pid, started in tree.items()
            ):
                time.sleep(0.1)
            survivors = [pid for pid, started in tree.items() if _still_running(pid, started)]
            return {
                "startup_s": startup_s,
                "idle_rss_total_mib": sum(p["rss_kib"] for p in processes) / 1024,
                "processes": processes,
                "cli_exit_code": proc.returncode,
                "stop_s": time.monotonic() - stop_started,
                "clean_exit": exited_on_sigint and not survivors,
                "survivors": survivors,
            }
        finally:
            stop_process(proc, signal.SIGKILL)
            for pid, started in tree.items():
                if _still_running(pid, started):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)


# Main ----------------------------------------------------------------------------------------


def table(rows: list[tuple[WrkResult, WrkResult]]) -> str:
    """The markdown table: one row per concurrency, ceiling beside swell."""
    lines = [
        "| concurrency | ceiling req/s | swell req/s | ratio swell/ceiling "
        "| ceiling p50/p99 ms | swell p50/p99 ms | errors ceiling/swell |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ceiling, served in rows:
        ratio = served.requests_per_s / ceiling.requests_per_s if ceiling.requests_per_s else 0.0
        lines.append(
            f"| {ceiling.concurrency} | {ceiling.requests_per_s:,.0f} "
            f"| {served.requests_per_s:,.0f} | {ratio:.2f} | {ceiling.latency()} "
            f"| {served.latency()} | {ceiling.errors} / {served.errors} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--concurrency", default="1,16,64,256", help="comma-separated wrk connection counts"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    haproxy = find_haproxy_binary(None)

    with tempfile.TemporaryDirectory(prefix="swell-bench-") as tmp:
        workdir = Path(tmp)
        print("swell run: startup time and idle memory ...", flush=True)
        cli = measure_cli(workdir)
        rows: list[tuple[WrkResult, WrkResult]] = []
        print("throughput (ceiling, then swell, at each concurrency) ...", flush=True)
        with ceiling_server(workdir) as ceiling_url, swell_server() as swell_url:
            for concurrency in levels:
                rows.append(
                    (
                        measure("ceiling", ceiling_url, concurrency, args.duration),
                        measure("swell", swell_url, concurrency, args.duration),
                    )
                )

    markdown = table(rows)
    print()
    print(
        f"wrk -t1 -d{args.duration}s, HAProxy {haproxy_version(haproxy)} ({haproxy}), "
        f"{os.cpu_count()} CPUs"
    )
    print()
    print(markdown)
    print()
    print(
        f"swell run startup to first 200: {cli['startup_s']:.2f} s; idle RSS of "
        f"{len(cli['processes'])} processes: {cli['idle_rss_total_mib']:.1f} MiB; "
        f"clean SIGINT exit: {cli['clean_exit']} (exit code {cli['cli_exit_code']}, "
        f"{cli['stop_s']:.1f} s)"
    )
    for process in cli["processes"]:
        print(f"  {process['rss_kib'] / 1024:7.1f} MiB  {process['command']}")

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"hello-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps(
            {
                "duration_s": args.duration,
                "haproxy": {"binary": haproxy, "version": haproxy_version(haproxy)},
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "table_markdown": markdown,
                "runs": [asdict(r) for pair in rows for r in pair],
                "cli": cli,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out.relative_to(REPO_ROOT)}")
    return 0 if cli["clean_exit"] else 1


if __name__ == "__main__":
    sys.exit(main())
