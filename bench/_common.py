"""Helpers shared by the benchmarks: free ports, polling, process stops, wrk, the ceiling.

Import it as ``bench._common`` after putting the repo root on ``sys.path`` (each benchmark script
does that first, so it runs from anywhere).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swell._ingress.haproxy_config import (
    BackendEntry,
    IngressSettings,
    ServerEntry,
    render,
)
from swell._ingress.haproxy_manager import find_haproxy_binary
from swell.config import HTTPOptions

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
QUERY = "/?name=Ada"
EXPECTED_BODY = b'{"message":"Hello, Ada"}'
READY_PATH = "/-/swell/ready"
REPLICA_MAXCONN = 100  # examples/hello.py: max_ongoing_requests=100
WARMUP_S = 1
READY_DEADLINE_S = 30.0
STOP_DEADLINE_S = 30.0
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


def alive(proc: subprocess.Popen[bytes]) -> Callable[[], bool]:
    """A liveness probe for ``wait_for_200``."""
    return lambda: proc.poll() is None


def check_body(url: str, expected: bytes = EXPECTED_BODY) -> None:
    """Every target must return the same content, or the comparison means nothing.

    JSON bodies are compared as JSON (key order and spacing may differ), others byte for byte.
    """
    status, body = http_get(url)
    try:
        same = json.loads(body) == json.loads(expected)
    except ValueError:
        same = body == expected
    if status != 200 or not same:
        raise RuntimeError(f"{url} answered {status} {body[:200]!r}, expected {expected[:200]!r}")


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

    def latency(self) -> str:
        """``p50 / p99`` in ms, for the tables."""
        return f"{self.p50_ms:.2f} / {self.p99_ms:.2f}"


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


# The ceiling ---------------------------------------------------------------------------------


def server_command(server: str, port: int) -> list[str]:
    """The command serving the ceiling app on ``port`` with ``server``: uvicorn (the
    ceiling), swell (the replicas' own server) or granian (if installed)."""
    if server == "uvicorn":
        return [
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
        ]
    if server == "swell":
        return [sys.executable, "-m", "bench._h1_server", HOST, str(port)]
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "asgi",
            "--host",
            HOST,
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--no-ws",
            "--workers",
            "1",
            "--runtime-threads",
            "1",
            "--log-level",
            "warning",
            "bench._ceiling_app:app",
        ]
    raise ValueError(f"unknown server {server!r}: uvicorn, swell or granian")


@contextlib.contextmanager
def ceiling_server(
    workdir: Path, server: str = "uvicorn", pids: list[int] | None = None
) -> Iterator[str]:
    """HAProxy (swell's rendered settings) before 2 bare server processes (uvicorn unless
    ``server`` says otherwise); yields its URL. ``pids`` gets the servers' and HAProxy's."""
    procs: list[subprocess.Popen[bytes]] = []
    log = (workdir / f"ceiling-{server}.log").open("wb")
    try:
        replica_ports = [free_port(), free_port()]
        for port in replica_ports:
            procs.append(
                subprocess.Popen(
                    server_command(server, port),
                    cwd=REPO_ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
        for port, proc in zip(replica_ports, procs, strict=True):
            wait_for_200(f"http://{HOST}:{port}{READY_PATH}", READY_DEADLINE_S, alive(proc))

        port = free_port()
        settings = IngressSettings.from_options(
            HTTPOptions(host=HOST, port=port), str(workdir / f"haproxy-{server}.sock"), 4096
        )
        servers = tuple(
            ServerEntry(f"r{i}", f"{HOST}:{p}", REPLICA_MAXCONN)
            for i, p in enumerate(replica_ports)
        )
        config = workdir / f"haproxy-{server}.cfg"
        config.write_text(
            render(settings, [BackendEntry(app_name="default", route_prefix="/", servers=servers)])
        )
        haproxy = subprocess.Popen(
            [find_haproxy_binary(None), "-W", "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(haproxy)
        if pids is not None:
            pids.extend(proc.pid for proc in procs)
        url = f"http://{HOST}:{port}{QUERY}"
        wait_for_200(url, READY_DEADLINE_S, alive(haproxy))
        check_body(url)
        yield url
    finally:
        for proc in reversed(procs):  # HAProxy first, then the replicas
            stop_process(proc)
        log.close()


@contextlib.contextmanager
def ray_serve_process(script: Path) -> Iterator[tuple[dict[str, Any], int]]:
    """Run one of the Ray Serve launchers (``_rayserve_*.py PORT``): it prints one JSON line
    once it serves and serves until its standard input closes. Yields (that line, its pid)."""
    proc = subprocess.Popen(
        [sys.executable, str(script), str(free_port())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"Ray Serve did not start (exit {proc.wait(60)})")
        yield json.loads(line), proc.pid
    finally:
        proc.stdin.close()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
