"""Where a served app's CPU goes under wrk load: /proc accounting, py-spy and perf.

Three phases, each under its own wrk run so the profilers do not skew one another:

1. ``/proc`` accounting (no profiler attached): CPU and context switches per request, per
   process and per thread group (the loop's main thread, other Python threads such as gRPC's
   poller, gRPC's ``event_engine`` threads).
2. ``py-spy record --nonblocking`` (Python frames): inclusive shares by category and the top
   self-time functions. Time in C code reached from the event loop itself (uvloop, gRPC's
   Cython coroutines) shows as ``Runner.run`` self time.
3. ``perf record`` (if ``perf`` is installed and allowed): shares per shared object (libpython =
   interpreting Python, cygrpc = gRPC core, kernel = syscalls and scheduling) and top symbols.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bench._common import stop_process

T = TypeVar("T")
SETTLE_S = 1.0  # wrk reaches steady state before anything is measured
PY_SPY_RATE_HZ = 100
PERF_RATE_HZ = 499

# What a Python frame's file or function says about where the time goes; first match wins.
CATEGORIES: list[tuple[str, str]] = [
    ("grpc (python/cython layer)", r"grpc"),
    ("pickle/codec", r"pickle|cloudpickle|_dataplane/codec"),
    ("swell router/handle", r"swell/_dataplane/router|swell/handle"),
    ("swell dataplane service", r"swell/_dataplane/service"),
    ("swell replica (ASGI, user_callable)", r"swell/_replica/"),
    ("httpx/httpcore", r"httpx|httpcore"),
    ("uvicorn/httptools", r"uvicorn|httptools"),
    ("starlette", r"starlette"),
    ("json", r"json/"),
    ("logging", r"logging/"),
    ("asyncio", r"asyncio/"),
    ("threads/executor", r"concurrent/futures|threading\.py"),
]


def under_load(
    url: str, concurrency: int, seconds: int, action: Callable[[], T]
) -> tuple[T, float | None]:
    """Run ``action`` (which takes about ``seconds``) while wrk loads ``url``; (result, req/s)."""
    command = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds + 2 * int(SETTLE_S) + 1}s", url]
    wrk = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        time.sleep(SETTLE_S)
        result = action()
        output, _ = wrk.communicate(timeout=seconds + 30)
    finally:
        stop_process(wrk)
    match = re.search(rb"Requests/sec:\s+([\d.]+)", output or b"")
    return result, float(match.group(1)) if match else None


# 1. /proc accounting -------------------------------------------------------------------------


def _thread_counters(pid: int) -> dict[str, tuple[int, int, int]]:
    """Per thread group of one process: (CPU clock ticks, voluntary, involuntary switches)."""
    groups: dict[str, list[int]] = {}
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
                status = Path(f"/proc/{pid}/task/{tid}/status").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            group = "main thread" if int(tid) == pid else f"{name} threads"
            voluntary = re.search(r"^voluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE)
            involuntary = re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", status, re.MULTILINE)
            counts = groups.setdefault(group, [0, 0, 0])
            counts[0] += int(fields[11]) + int(fields[12])
            counts[1] += int(voluntary.group(1)) if voluntary else 0
            counts[2] += int(involuntary.group(1)) if involuntary else 0
    return {group: (c[0], c[1], c[2]) for group, c in groups.items()}


def cpu_accounting(
    url: str, concurrency: int, seconds: int, pids: dict[str, int]
) -> dict[str, Any]:
    """CPU ms and context switches per HTTP request, per process and thread group."""

    def window() -> tuple[dict[str, Any], dict[str, Any], float]:
        before = {label: _thread_counters(pid) for label, pid in pids.items()}
        start = time.monotonic()
        time.sleep(seconds)
        after = {label: _thread_counters(pid) for label, pid in pids.items()}
        return before, after, time.monotonic() - start

    (before, after, elapsed), rps = under_load(url, concurrency, seconds, window)
    tick = os.sysconf("SC_CLK_TCK")
    requests = (rps or 0.0) * elapsed
    result: dict[str, Any] = {"requests_per_s": rps, "seconds": elapsed, "processes": {}}
    for label, groups in after.items():
        rows = {}
        for group, (cpu, vol, invol) in groups.items():
            cpu0, vol0, invol0 = before[label].get(group, (0, 0, 0))
            rows[group] = {
                "cpu_pct": 100.0 * (cpu - cpu0) / tick / elapsed,
                "cpu_ms_per_request": 1e3 * (cpu - cpu0) / tick / requests if requests else 0.0,
                "voluntary_switches_per_request": (vol - vol0) / requests if requests else 0.0,
                "involuntary_switches_per_request": (invol - invol0) / requests
                if requests
                else 0.0,
            }
        keys = (
            "cpu_pct",
            "cpu_ms_per_request",
            "voluntary_switches_per_request",
            "involuntary_switches_per_request",
        )
        total = {key: sum(row[key] for row in rows.values()) for key in keys}
        result["processes"][label] = {"total": total, "threads": rows}
    return result


# 2. py-spy -----------------------------------------------------------------------------------


def _py_spy() -> str | None:
    found = shutil.which("py-spy")
    local = Path(sys.executable).with_name("py-spy")
    return found or (str(local) if local.exists() else None)


def py_spy(
    url: str, concurrency: int, seconds: int, pids: dict[str, int], outdir: Path
) -> dict[str, Any] | None:
    """Sample every PID at once (raw stacks to summarise, plus flamegraphs); None without it."""
    binary = _py_spy()
    if binary is None:
        return None

    def record() -> dict[str, Path]:
        procs: list[subprocess.Popen[bytes]] = []
        outputs: dict[str, Path] = {}
        with (outdir / "py-spy.log").open("wb") as log:
            try:
                for label, pid in pids.items():
                    for fmt, suffix in (("raw", "txt"), ("flamegraph", "svg")):
                        out = outdir / f"{label}.{suffix}"
                        if fmt == "raw":
                            outputs[label] = out
                        rate = PY_SPY_RATE_HZ if fmt == "raw" else PY_SPY_RATE_HZ // 4
                        procs.append(
                            subprocess.Popen(
                                [
                                    binary,
                                    "record",
                                    "--nonblocking",
                                    "--rate",
                                    str(rate),
                                    "--duration",
                                    str(seconds),
                                    "--format",
                                    fmt,
                                    "--output",
                                    str(out),
                                    "--pid",
                                    str(pid),
                                ],
                                stdout=log,
                                stderr=subprocess.STDOUT,
                            )
                        )
                deadline = time.monotonic() + seconds + 30
                for proc in procs:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            finally:
                for proc in procs:
                    stop_process(proc)
        return outputs

    outputs, rps = under_load(url, concurrency, seconds, record)
    return {
        "requests_per_s": rps,
        "processes": {label: summarise(path) for label, path in outputs.items() if path.exists()},
    }


def summarise(stacks_file: Path, top: int = 12) -> dict[str, Any]:
    """Inclusive shares of categories and self shares of functions in collapsed stacks."""
    total = 0
    per_category: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    for line in stacks_file.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        categories: set[str] = set()
        for frame in frames:
            for category, pattern in CATEGORIES:
                if re.search(pattern, frame):
                    categories.add(category)
                    break
        self_time[_short(frames[-1])] += count
        for category in categories:
            per_category[category] += count

    def share(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, 100.0 * v / total) for k, v in counter.most_common(n)] if total else []

    return {
        "samples": total,
        "categories_inclusive_pct": share(per_category, len(CATEGORIES)),
        "functions_self_pct": share(self_time, top),
    }


def _short(frame: str) -> str:
    """``func (path/to/file.py:12)`` -> ``func (to/file.py)``, so line numbers do not split."""
    match = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not match:
        return frame
    parts = match.group(2).split("/")
    return f"{match.group(1)} ({'/'.join(parts[-2:])})"


# 3. perf -------------------------------------------------------------------------------------


def perf(
    url: str, concurrency: int, seconds: int, pids: dict[str, int], outdir: Path
) -> dict[str, Any] | None:
    """``perf record`` every PID; shares per shared object and top symbols. None without it."""
    binary = shutil.which("perf")
    if binary is None:
        return None

    def record() -> dict[str, Path]:
        procs: list[subprocess.Popen[bytes]] = []
        outputs = {label: outdir / f"{label}.perf.data" for label in pids}
        with (outdir / "perf.log").open("wb") as log:
            try:
                for label, pid in pids.items():
                    procs.append(
                        subprocess.Popen(
                            [
                                binary,
                                "record",
                                "-F",
                                str(PERF_RATE_HZ),
                                "-g",
                                "-o",
                                str(outputs[label]),
                                "-p",
                                str(pid),
                                "--",
                                "sleep",
                                str(seconds),
                            ],
                            stdout=log,
                            stderr=subprocess.STDOUT,
                        )
                    )
                deadline = time.monotonic() + seconds + 30
                for proc in procs:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            finally:
                for proc in procs:
                    stop_process(proc)
        return outputs

    outputs, rps = under_load(url, concurrency, seconds, record)
    processes = {}
    for label, data in outputs.items():
        if data.exists():
            processes[label] = {
                "by_object_pct": _perf_report(binary, data, "dso", 8),
                "top_symbols_pct": _perf_report(binary, data, "dso,sym", 15),
            }
    return {"requests_per_s": rps, "processes": processes} if processes else None


def _perf_report(binary: str, data: Path, sort: str, top: int) -> list[tuple[str, float]]:
    done = subprocess.run(
        [
            binary,
            "report",
            "-i",
            str(data),
            "--no-children",
            "--sort",
            sort,
            "-g",
            "none",
            "--stdio",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    rows = []
    for line in done.stdout.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if match and not line.startswith("#"):
            rows.append((re.sub(r"\s+", " ", match.group(2)), float(match.group(1))))
    return rows[:top]


# All three -----------------------------------------------------------------------------------


def profile(
    url: str, concurrency: int, seconds: int, pids: dict[str, int], outdir: Path
) -> dict[str, Any]:
    """The three phases, one after another, each under its own wrk run."""
    outdir.mkdir(parents=True, exist_ok=True)
    return {
        "pids": pids,
        "concurrency": concurrency,
        "seconds": seconds,
        "outdir": str(outdir),
        "cpu": cpu_accounting(url, concurrency, seconds, pids),
        "py_spy": py_spy(url, concurrency, seconds, pids, outdir),
        "perf": perf(url, concurrency, seconds, pids, outdir),
    }


def format_profile(result: dict[str, Any]) -> str:
    """A readable summary of ``profile``'s result."""
    cpu = result["cpu"]
    lines = [
        f"profile at c={result['concurrency']}, {result['seconds']} s per phase, files in "
        f"{result['outdir']}",
        f"\n/proc accounting ({cpu['requests_per_s']} req/s, no profiler attached); per HTTP "
        "request:",
    ]
    for label, proc in cpu["processes"].items():
        t = proc["total"]
        lines.append(
            f"  {label} (pid {result['pids'][label]}): {t['cpu_pct']:.0f}% CPU, "
            f"{t['cpu_ms_per_request']:.3f} ms CPU, "
            f"{t['voluntary_switches_per_request']:.1f} voluntary + "
            f"{t['involuntary_switches_per_request']:.1f} involuntary switches"
        )
        for group, row in sorted(proc["threads"].items(), key=lambda kv: -kv[1]["cpu_pct"]):
            lines.append(
                f"      {group:22s} {row['cpu_pct']:5.1f}% CPU  "
                f"{row['cpu_ms_per_request']:.3f} ms  "
                f"{row['voluntary_switches_per_request']:.1f} vol "
                f"{row['involuntary_switches_per_request']:.1f} invol"
            )
    spy = result["py_spy"]
    if spy:
        lines.append(
            f"\npy-spy ({PY_SPY_RATE_HZ} Hz, non-blocking, {spy['requests_per_s']} req/s while "
            "sampled); shares of active samples:"
        )
        for label, summary in spy["processes"].items():
            lines.append(f"  {label} ({summary['samples']} samples)")
            lines.append(
                "    inclusive: "
                + ", ".join(
                    f"{name} {pct:.0f}%" for name, pct in summary["categories_inclusive_pct"]
                )
            )
            lines.append(
                "    self: "
                + "; ".join(f"{name} {pct:.1f}%" for name, pct in summary["functions_self_pct"])
            )
    native = result["perf"]
    if native:
        lines.append(
            f"\nperf ({PERF_RATE_HZ} Hz, {native['requests_per_s']} req/s while sampled); "
            "self shares:"
        )
        for label, report in native["processes"].items():
            lines.append(f"  {label}")
            lines.append(
                "    by object: "
                + ", ".join(f"{name} {pct:.1f}%" for name, pct in report["by_object_pct"])
            )
            lines.append(
                "    symbols: "
                + "; ".join(f"{name} {pct:.1f}%" for name, pct in report["top_symbols_pct"])
            )
    return "\n".join(lines)
