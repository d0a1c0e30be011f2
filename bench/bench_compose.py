"""Benchmark swell's composition (ingress -> handle -> model) against hello and the ceiling.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_compose.py [--duration 10] [--concurrency 1,16,64,256]
    python bench/bench_compose.py --splits 1x1,1x2,2x1,2x2,1x2s --duration 5   # replica splits
    python bench/bench_compose.py --profile /tmp/prof --concurrency 64           # plus py-spy

In one run, at each concurrency, interleaved: the ceiling (HAProxy + 2 bare uvicorn processes),
swell's hello app (examples/hello.py, 2 replicas) and the composition (``bench.apps``: an ingress
that makes one handle call to a model per request, answering the same bytes). Then a streaming
app (the ingress relays 32 chunks from the model's async generator per request). Results go to
stdout (markdown) and to ``bench/results/`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
    WrkResult,
    ceiling_server,
    check_body,
    free_port,
    measure,
    wait_for_200,
)
from bench._profile import cpu_accounting, format_profile, profile  # noqa: E402
from bench.apps import STREAM_CHUNKS, compose_app, stream_app, stream_body  # noqa: E402
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402


@dataclass(frozen=True)
class Split:
    """Replica counts of the composition, and whether the model's method is a plain ``def``."""

    ingress: int
    model: int
    sync_model: bool = False

    @classmethod
    def parse(cls, text: str) -> Split:
        match = re.fullmatch(r"(\d+)x(\d+)(s?)", text.strip())
        if not match:
            raise argparse.ArgumentTypeError(f"split {text!r} is not INGRESSxMODEL[s], e.g. 1x2")
        return cls(int(match.group(1)), int(match.group(2)), bool(match.group(3)))

    def __str__(self) -> str:
        return f"{self.ingress}x{self.model}{'s' if self.sync_model else ''}"


# swell, in this process ----------------------------------------------------------------------


@contextlib.contextmanager
def swell_running() -> Iterator[int]:
    """swell started in this process (nothing deployed yet); yields its HTTP port."""
    port = free_port()
    try:
        swell.start(http_options={"host": HOST, "port": port}, admin_port=0)
        yield port
    finally:
        swell.shutdown()


def deploy(app: swell.Application, name: str, port: int, expected: bytes) -> str:
    """Run one app under ``/name``; its URL once HAProxy routes to it and it answers right."""
    swell.run(app, name=name, route_prefix=f"/{name}")  # returns once every replica is healthy
    query = f"/{name}?n={STREAM_CHUNKS}" if name == "stream" else f"/{name}{QUERY[1:]}"
    url = f"http://{HOST}:{port}{query}"
    wait_for_200(url, READY_DEADLINE_S)  # HAProxy's own check may lag the controller's
    check_body(url, expected)
    return url


def replica_pids(app_name: str) -> dict[str, list[int]]:
    """Deployment name -> PIDs of its replicas, from ``swell.status()``."""
    app = swell.status().applications[app_name]
    return {
        name: [r.pid for r in dep.replicas if r.pid is not None]
        for name, dep in app.deployments.items()
    }


# Tables --------------------------------------------------------------------------------------


def _ratio(a: WrkResult, b: WrkResult) -> str:
    return f"{a.requests_per_s / b.requests_per_s:.2f}" if b.requests_per_s else "-"


def main_table(rows: list[tuple[WrkResult, WrkResult, WrkResult]]) -> str:
    lines = [
        "| concurrency | ceiling req/s | hello req/s | compose req/s | compose/ceiling "
        "| compose/hello | ceiling p50/p99 ms | hello p50/p99 ms | compose p50/p99 ms "
        "| errors c/h/comp |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ceiling, hello, compose in rows:
        lines.append(
            f"| {ceiling.concurrency} | {ceiling.requests_per_s:,.0f} "
            f"| {hello.requests_per_s:,.0f} | {compose.requests_per_s:,.0f} "
            f"| {_ratio(compose, ceiling)} | {_ratio(compose, hello)} | {ceiling.latency()} "
            f"| {hello.latency()} | {compose.latency()} "
            f"| {ceiling.errors}/{hello.errors}/{compose.errors} |"
        )
    return "\n".join(lines)


def stream_table(rows: list[WrkResult]) -> str:
    lines = [
        f"| concurrency | responses/s ({STREAM_CHUNKS} chunks each) | chunks/s "
        "| p50/p99 ms (whole response) | errors |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.concurrency} | {r.requests_per_s:,.0f} | "
            f"{r.requests_per_s * STREAM_CHUNKS:,.0f} | {r.latency()} | {r.errors} |"
        )
    return "\n".join(lines)


def split_table(rows: list[tuple[Split, WrkResult, WrkResult]]) -> str:
    lines = [
        "| split ingress x model | ceiling req/s | compose req/s | compose/ceiling "
        "| compose p50/p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for split, ceiling, compose in rows:
        lines.append(
            f"| {split} | {ceiling.requests_per_s:,.0f} | {compose.requests_per_s:,.0f} "
            f"| {_ratio(compose, ceiling)} | {compose.latency()} | {compose.errors} |"
        )
    return "\n".join(lines)


# Main ----------------------------------------------------------------------------------------


def _levels(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--concurrency", default="1,16,64,256", help="comma-separated wrk connection counts"
    )
    parser.add_argument(
        "--stream-concurrency", default="16,64", help="connection counts of the streaming run"
    )
    parser.add_argument(
        "--split",
        type=Split.parse,
        default=Split(2, 1),
        help="INGRESSxMODEL replicas of the composition, 's' suffix for a sync model (2x1)",
    )
    parser.add_argument(
        "--splits",
        type=lambda s: [Split.parse(p) for p in s.split(",")],
        help="instead of the tables: compare these splits (e.g. 1x1,1x2,2x1,2x2,1x2s) "
        "at --split-concurrency, each beside the ceiling",
    )
    parser.add_argument("--split-concurrency", type=int, default=64)
    parser.add_argument(
        "--profile",
        type=Path,
        help="after the tables, profile the composition's replicas (/proc CPU accounting, "
        "py-spy, perf) and write stacks and flamegraphs into this folder",
    )
    parser.add_argument("--profile-concurrency", type=int, default=64)
    args = parser.parse_args()
    haproxy = find_haproxy_binary(None)
    header = (
        f"wrk -t1 -d{args.duration}s, HAProxy {haproxy_version(haproxy)} ({haproxy}), "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    report: dict[str, Any] = {
        "duration_s": args.duration,
        "haproxy": {"binary": haproxy, "version": haproxy_version(haproxy)},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    expected = json.dumps({"message": "Hello, Ada"}).encode()
    from examples.hello import app as hello_app

    with (
        tempfile.TemporaryDirectory(prefix="swell-bench-") as tmp,
        ceiling_server(Path(tmp)) as ceiling_url,
        swell_running() as port,
    ):
        if args.splits:
            split_rows: list[tuple[Split, WrkResult, WrkResult]] = []
            for split in args.splits:
                print(f"split {split} ...", flush=True)
                app = compose_app(split.ingress, split.model, split.sync_model)
                url = deploy(app, "compose", port, expected)
                c = args.split_concurrency
                split_rows.append(
                    (
                        split,
                        measure("ceiling", ceiling_url, c, args.duration),
                        measure(f"comp {split}", url, c, args.duration),
                    )
                )
                swell.delete("compose")
            markdown = split_table(split_rows)
            print(f"\n{header}, c={args.split_concurrency}\n\n{markdown}")
            report["splits"] = [
                {"split": str(s), "ceiling": asdict(a), "compose": asdict(b)}
                for s, a, b in split_rows
            ]
            report["table_markdown"] = markdown
            return _write(report, "compose-splits")

        split = args.split
        hello_url = deploy(hello_app, "hello", port, expected)
        compose_url = deploy(
            compose_app(split.ingress, split.model, split.sync_model), "compose", port, expected
        )
        stream_url = deploy(stream_app(), "stream", port, stream_body())
        rows: list[tuple[WrkResult, WrkResult, WrkResult]] = []
        print(f"throughput (ceiling, hello, compose {split}, at each concurrency) ...")
        for c in _levels(args.concurrency):
            rows.append(
                (
                    measure("ceiling", ceiling_url, c, args.duration),
                    measure("hello", hello_url, c, args.duration),
                    measure("compose", compose_url, c, args.duration),
                )
            )
        print("streaming ...", flush=True)
        stream_rows = [
            measure("stream", stream_url, c, args.duration)
            for c in _levels(args.stream_concurrency)
        ]
        check_body(stream_url, stream_body())  # still whole after the load
        profiled = None
        if args.profile:
            labels = {
                f"{deployment.lower()}-{i}": pid
                for deployment, found in replica_pids("compose").items()
                for i, pid in enumerate(found)
            }
            c = args.profile_concurrency
            print(f"profiling {labels} at c={c} ...", flush=True)
            profiled = profile(compose_url, c, args.duration, labels, args.profile)
            hello_pids = {f"hello-{i}": pid for i, pid in enumerate(replica_pids("hello")["Hello"])}
            profiled["hello_cpu"] = {
                "pids": hello_pids,
                **cpu_accounting(hello_url, c, args.duration, hello_pids),
            }

    markdown = main_table(rows)
    streaming = stream_table(stream_rows)
    print(f"\n{header}; compose split ingress x model = {split}\n\n{markdown}\n\n{streaming}")
    if profiled:
        print()
        print(format_profile(profiled))
        hello_cpu = profiled["hello_cpu"]
        print(f"\nfor comparison, hello ({hello_cpu['requests_per_s']} req/s); per HTTP request:")
        for label, proc in hello_cpu["processes"].items():
            total = proc["total"]
            print(
                f"  {label}: {total['cpu_pct']:.0f}% CPU, {total['cpu_ms_per_request']:.3f} ms "
                f"CPU, {total['voluntary_switches_per_request']:.1f} voluntary + "
                f"{total['involuntary_switches_per_request']:.1f} involuntary switches"
            )
    report.update(
        {
            "split": str(split),
            "table_markdown": markdown,
            "stream_table_markdown": streaming,
            "runs": [asdict(r) for row in rows for r in row],
            "stream_runs": [asdict(r) for r in stream_rows],
            "profile": profiled,
        }
    )
    return _write(report, "compose")


def _write(report: dict[str, Any], prefix: str) -> int:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
