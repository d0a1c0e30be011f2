"""What the metrics cost on the hot path: this tree against a tree without them, side by side.

Usage::

    git -C . archive <commit-without-metrics> | tar -x -C /tmp/baseline
    python bench/bench_metrics.py --baseline /tmp/baseline [--rounds 3] [--duration 5]

Two swell instances run at once, one importing swell from this tree (metrics on), one from
``--baseline``'s ``src`` (metrics off), each serving examples/hello.py and the composition
(``bench.apps``: one handle call per request). Rounds alternate which is measured first, so
drift on a shared machine hits both alike; the result is the median of the per-round ratios
on/off, never a lone absolute number. The replica's own hot-path work is also timed in-process
(``--micro``), which no neighbour's load can blur.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench._common import (  # noqa: E402
    HOST,
    QUERY,
    WARMUP_S,
    free_port,
    parse_wrk,
    run_wrk,
    wait_for_200,
)
from bench.bench_hello import descendants  # noqa: E402

_DRIVER = """
import sys
import swell
from examples.hello import app as hello
from bench.apps import app as compose
swell.start(http_options={"host": "127.0.0.1", "port": int(sys.argv[1])}, admin_port=0)
swell.run(hello, name="hello", route_prefix="/hello")
swell.run(compose, name="compose", route_prefix="/compose")
print("metrics" if hasattr(swell, "metrics") else "no-metrics", flush=True)
sys.stdin.read()
swell.shutdown()
"""


class Instance:
    """A swell instance in a subprocess importing swell from ``src``."""

    def __init__(self, src: Path) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": f"{src}{os.pathsep}{REPO_ROOT}"}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _DRIVER, str(self.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=REPO_ROOT,
        )
        assert self.process.stdout is not None
        self.kind = self.process.stdout.readline().decode().strip()
        if not self.kind:
            raise RuntimeError(f"the instance importing swell from {src} did not start")
        for path in ("/hello", "/compose"):
            wait_for_200(self.url(path), 60)

    def cpu_s(self) -> float:
        """CPU seconds used so far by the instance's processes (controller, HAProxy, replicas).

        CPU time per request is what metrics add; unlike req/s on a shared machine, a
        neighbour's load barely moves it."""
        total = 0
        for pid in [self.process.pid, *descendants(self.process.pid)]:
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / os.sysconf("SC_CLK_TCK")

    def url(self, path: str) -> str:
        return f"http://{HOST}:{self.port}{path}{QUERY}"

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def micro() -> dict[str, float]:
    """Nanoseconds per request of the metrics work a replica does (best of 5 runs)."""
    from swell._metrics.process import ProcessMetrics

    process = ProcessMetrics()
    process.context = ("app", "Dep", "Dep-1")
    n = 200_000

    def http() -> None:
        started = time.perf_counter()
        process.http_done("/hello", "GET", 200, time.perf_counter() - started)

    def call() -> None:
        started = time.perf_counter()
        process.call_done("app", "Model", True, time.perf_counter() - started)
        process.received_done("predict", True, time.perf_counter() - started)

    out = {}
    for name, fn in (("http_request_ns", http), ("handle_call_both_sides_ns", call)):
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best = min(best, (time.perf_counter() - start) / n * 1e9)
        out[name] = round(best, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a swell tree without metrics")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    print("in-process hot-path cost:", micro(), flush=True)
    on = Instance(REPO_ROOT / "src")
    off = Instance(args.baseline / "src")
    try:
        assert (on.kind, off.kind) == ("metrics", "no-metrics"), (on.kind, off.kind)
        ratios: dict[str, list[float]] = {"/hello": [], "/compose": []}
        cpu: dict[str, list[float]] = {"/hello": [], "/compose": []}
        # One unmeasured pass: both instances finish warming up (imports, first connections)
        # before anything counts.
        for instance in (on, off):
            for path in ratios:
                run_wrk(instance.url(path), args.concurrency, 2)
        for index in range(args.rounds):
            order = [("on", on), ("off", off)] if index % 2 == 0 else [("off", off), ("on", on)]
            for path in ratios:
                rates, per_request = {}, {}
                for label, instance in order:
                    url = instance.url(path)
                    run_wrk(url, args.concurrency, WARMUP_S)
                    before = instance.cpu_s()
                    output = run_wrk(url, args.concurrency, args.duration)
                    used = instance.cpu_s() - before
                    result = parse_wrk(f"{label}{path}", args.concurrency, output)
                    rates[label] = result.requests_per_s
                    per_request[label] = used / (result.requests_per_s * args.duration)
                    print(
                        f"  {label:3s} {path:9s} {result.requests_per_s:8.0f} req/s  "
                        f"{per_request[label] * 1e6:7.1f} µs CPU per request",
                        flush=True,
                    )
                ratios[path].append(rates["on"] / rates["off"])
                cpu[path].append(per_request["on"] / per_request["off"])
        for path in ratios:
            print(
                f"{path}: req/s on/off per round {[round(v, 3) for v in ratios[path]]} "
                f"(median {statistics.median(ratios[path]):.3f}); CPU per request on/off "
                f"{[round(v, 3) for v in cpu[path]]} (median {statistics.median(cpu[path]):.3f})",
                flush=True,
            )
    finally:
        on.stop()
        off.stop()


if __name__ == "__main__":
    main()
