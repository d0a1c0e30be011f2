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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import swell  # noqa: E402
from swell._ingress.haproxy_config import (  # noqa: E402
    BackendEntry,
    IngressSettings,
    ServerEntry,
    render,
)
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402

HOST = "127.0.0.1"
QUERY = "/?name=Ada"
EXPECTED_BODY = b'{"message":"Hello, Ada"}'
READY_PATH = "/-/swell/ready"
REPLICA_MAXCONN = 100  # examples/hello.py: max_ongoing_requests=100
WARMUP_S = 1
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
IDLE_SETTLE_S = 2.0  # let the replicas finish start-up work before RSS is read
RESULTS_DIR = REPO_ROOT / "bench" / "results"


# Small helpers -------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port (bind port 0); the tiny reuse race is acceptable for a benchmark."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int, bytes]:
    """Status and body of a GET, with an HTTP error status returned rather than raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()


def wait_for_200(url: str, deadline_s: float, alive: Callable[[], bool] = lambda: True) -> float:
    """Poll until ``url`` answers 200; seconds waited. Raises on deadline or a dead server."""
    start = time.monotonic()
    last_error = "no attempt"
    while time.monotonic() - start < deadline_s:
        if not alive():
            raise RuntimeError(f"the server behind {url} exited while starting ({last_error})")
        try:
            status, _ = http_get(url, timeout_s=1.0)
            if status == 200:
                return time.monotonic() - start
            last_error = f"HTTP {status}"
        except OSError as error:
            last_error = repr(error)
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer 200 within {deadline_s:.0f}s ({last_error})")


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> bool:
    """Signal one child by PID, SIGKILL it past the deadline; False if it needed the SIGKILL."""
    if proc.poll() is not None:
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout=STOP_DEADLINE_S)
        return True
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=5)
        return False


# wrk -----------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unrecognised wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


@dataclass
class WrkResult:
    """What one wrk run measured; ``errors`` counts non-2xx/3xx responses and socket errors."""

    target: str
    concurrency: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: dict[str, int]
    raw: str

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def parse_wrk(target: str, concurrency: int, output: str) -> WrkResult:
    """Parse ``wrk --latency`` output (wrk 4.1's format)."""

    def find(pattern: str) -> re.Match[str]:
        match = re.search(pattern, output, re.MULTILINE)
        if not match:
            raise ValueError(f"wrk output lacks {pattern!r}:\n{output}")
        return match

    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(
        target=target,
        concurrency=concurrency,
        requests=int(find(r"^\s*(\d+) requests in").group(1)),
        requests_per_s=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=_ms(find(r"^\s+50%\s+(\S+)").group(1)),
        p99_ms=_ms(find(r"^\s+99%\s+(\S+)").group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=dict(
            zip(
                ("connect", "read", "write", "timeout"),
                (int(n) for n in sockets.groups()) if sockets else (0, 0, 0, 0),
                strict=True,
            )
        ),
        raw=output,
    )


def run_wrk(url: str, concurrency: int, duration_s: int) -> str:
    """One wrk run (a single thread: the machine has 2 cores, shared with the servers)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration_s}s", "--latency", url]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 30, check=True
    )
    return done.stdout


def measure(target: str, url: str, concurrency: int, duration_s: int) -> WrkResult:
    """A short warm-up at this concurrency, then the measured run."""
    run_wrk(url, concurrency, WARMUP_S)
    result = parse_wrk(target, concurrency, run_wrk(url, concurrency, duration_s))
    print(
        f"  {target:8s} c={concurrency:<4d} {result.requests_per_s:9.0f} req/s  "
        f"p50 {result.p50_ms:.2f} ms  p99 {result.p99_ms:.2f} ms  errors {result.errors}",
        flush=True,
    )
    return result


# The two targets -----------------------------------------------------------------------------


@contextlib.contextmanager
def ceiling_server(workdir: Path) -> Iterator[str]:
    """HAProxy (swell's rendered settings) before 2 bare uvicorn processes; yields its URL."""
    procs: list[subprocess.Popen[bytes]] = []
    log = (workdir / "ceiling.log").open("wb")
    try:
        replica_ports = [free_port(), free_port()]
        for port in replica_ports:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "bench._ceiling_app:app",
                        "--host",
                        HOST,
                        "--port",
                        str(port),
                        "--loop",
                        "uvloop",
                        "--http",
                        "httptools",
                        "--no-access-log",
                        "--log-level",
                        "warning",
                    ],
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port, proc in zip(replica_ports, procs, strict=True):
            wait_for_200(f"http://{HOST}:{port}{READY_PATH}", READY_DEADLINE_S, _alive(proc))

        port = free_port()
        settings = IngressSettings(
            bind_host=HOST,
            bind_port=port,
            socket_path=str(workdir / "haproxy.sock"),
            global_maxconn=4096,
            queue_timeout_s=30.0,
            keep_alive_timeout_s=90.0,
            request_timeout_s=None,
        )
        servers = tuple(
            ServerEntry(f"r{i}", f"{HOST}:{p}", REPLICA_MAXCONN)
            for i, p in enumerate(replica_ports)
        )
        config = workdir / "haproxy.cfg"
        config.write_text(
            render(settings, [BackendEntry(app_name="default", route_prefix="/", servers=servers)])
        )
        haproxy = subprocess.Popen(
            [find_haproxy_binary(None), "-W", "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(haproxy)
        url = f"http://{HOST}:{port}{QUERY}"
        wait_for_200(url, READY_DEADLINE_S, _alive(haproxy))
        _check_body(url)
        yield url
    finally:
        for proc in reversed(procs):  # HAProxy first, then the replicas
            stop_process(proc)
        log.close()


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
        _check_body(url)
        yield url
    finally:
        swell.shutdown()


def _alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    return lambda: proc.poll() is None


def _check_body(url: str) -> None:
    """Both targets must return the same bytes, or the comparison means nothing."""
    status, body = http_get(url)
    if status != 200 or json.loads(body) != json.loads(EXPECTED_BODY):
        raise RuntimeError(f"{url} answered {status} {body!r}, expected {EXPECTED_BODY!r}")


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
            wait_for_200(f"http://{HOST}:{port}{QUERY}", READY_DEADLINE_S, _alive(proc))
            startup_s = time.monotonic() - start
            time.sleep(IDLE_SETTLE_S)  # settle only; readiness was established above
            tree = descendants(proc.pid)
            processes = [
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


def _pair(c: WrkResult) -> str:
    return f"{c.p50_ms:.2f} / {c.p99_ms:.2f}"


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
            f"| {served.requests_per_s:,.0f} | {ratio:.2f} | {_pair(ceiling)} "
            f"| {_pair(served)} | {ceiling.errors} / {served.errors} |"
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
