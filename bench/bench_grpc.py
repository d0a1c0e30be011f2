"""Benchmark swell's gRPC ingress against a ceiling, with swell's HTTP ingress alongside.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_grpc.py [--duration 5] [--concurrency 1,16]

Three targets, measured interleaved at each concurrency because the machine is noisy:

- ``ceiling``: HAProxy (rendered by swell's own renderer, so the settings are identical) in
  front of one bare grpc.aio server on uvloop answering the same unary Ping;
- ``grpc``: the same Ping through swell (HAProxy's gRPC frontend, one ingress replica);
- ``http``: the same deployment's HTTP noop through swell, measured with wrk.

gRPC load comes from a closed-loop grpc.aio client in its own process (``_grpc_load.py``); the
ratio grpc/ceiling is what swell's replica stack costs a gRPC call. HTTP uses a different
client (wrk), so grpc/http compares the two ingresses end to end, clients included.
Results go to stdout (markdown) and to ``bench/results/`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    HOST,
    READY_DEADLINE_S,
    RESULTS_DIR,
    WARMUP_S,
    alive,
    free_port,
    measure,
    stop_process,
    wait_for_200,
)
from bench._grpc_noop import SERVICER, compile_proto, noop_app  # noqa: E402
from swell._ingress.haproxy_config import (  # noqa: E402
    BackendEntry,
    IngressSettings,
    ServerEntry,
    render,
)
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402
from swell.config import HTTPOptions, gRPCOptions  # noqa: E402

MAXCONN = 100  # Noop's max_ongoing_requests


def grpc_load(
    proto_dir: Path, target: str, concurrency: int, seconds: float, app: str = ""
) -> dict[str, Any]:
    """One closed-loop run of the gRPC client process; its JSON result."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench._grpc_load",
            str(proto_dir),
            target,
            str(concurrency),
            str(seconds),
            app,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def measure_grpc(
    name: str, proto_dir: Path, target: str, concurrency: int, seconds: float
) -> dict[str, Any]:
    grpc_load(proto_dir, target, concurrency, WARMUP_S)
    result = grpc_load(proto_dir, target, concurrency, seconds)
    print(
        f"  {name:8s} c={concurrency:<4d} {result['requests_per_s']:9.0f} req/s  "
        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"errors {result['errors']}",
        flush=True,
    )
    return result


@contextlib.contextmanager
def ceiling(proto_dir: Path, workdir: Path, binary: str) -> Iterator[str]:
    """HAProxy's gRPC frontend before one bare grpc.aio server; yields the gRPC target."""
    procs: list[subprocess.Popen[bytes]] = []
    log = (workdir / "ceiling.log").open("wb")
    try:
        grpc_port, check_port = free_port(), free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bench._grpc_noop",
                str(proto_dir),
                str(grpc_port),
                str(check_port),
            ],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(server)
        wait_for_200(f"http://{HOST}:{check_port}/", READY_DEADLINE_S, alive(server))
        front = free_port()
        settings = IngressSettings.from_options(
            HTTPOptions(host=HOST, port=free_port()),
            str(workdir / "haproxy.sock"),
            4096,
            grpc=gRPCOptions(port=front, grpc_servicer_functions=[SERVICER]),
        )
        # The HTTP address is never used: the HTTP frontend gets no traffic here.
        entry = ServerEntry(
            "c0", f"{HOST}:{check_port}", MAXCONN, check_port=check_port, grpc_port=grpc_port
        )
        config = workdir / "haproxy.cfg"
        config.write_text(render(settings, [BackendEntry("noop", "/", (entry,))]))
        haproxy = subprocess.Popen(
            [binary, "-W", "-db", "-f", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        procs.append(haproxy)
        target = f"{HOST}:{front}"
        grpc_load(proto_dir, target, 1, 0.2)  # raises unless it answers
        yield target
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        log.close()


@contextlib.contextmanager
def swell_noop(binary: str) -> Iterator[tuple[str, str]]:
    """swell serving the Noop app over gRPC and HTTP; yields (gRPC target, HTTP URL)."""
    http_port, grpc_port = free_port(), free_port()
    swell.start(
        http_options={"host": HOST, "port": http_port, "haproxy_binary": binary},
        admin_port=0,
        grpc_options={"port": grpc_port, "grpc_servicer_functions": [SERVICER]},
    )
    try:
        swell.run(noop_app, name="noop")
        url = f"http://{HOST}:{http_port}/"
        wait_for_200(url, READY_DEADLINE_S)
        yield f"{HOST}:{grpc_port}", url
    finally:
        swell.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", default="1,16", help="comma-separated levels")
    parser.add_argument("--haproxy", help="HAProxy binary for both (default: swell's choice)")
    args = parser.parse_args()
    binary = args.haproxy or find_haproxy_binary(None)
    print(f"HAProxy: {binary} ({haproxy_version(binary)})", flush=True)
    levels = [int(c) for c in args.concurrency.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="swell-bench-grpc-") as tmp:
        proto_dir = Path(tmp) / "proto"
        proto_dir.mkdir()
        compile_proto(proto_dir)
        sys.path.insert(0, str(proto_dir))  # the replicas inherit it
        with (
            ceiling(proto_dir, Path(tmp), binary) as ceiling_target,
            swell_noop(binary) as (target, url),
        ):
            for c in levels:
                print(f"concurrency {c}:", flush=True)
                top = measure_grpc("ceiling", proto_dir, ceiling_target, c, args.duration)
                ours = measure_grpc("grpc", proto_dir, target, c, args.duration)
                http = measure("http", url, c, max(1, round(args.duration)))
                rows.append(
                    {
                        "concurrency": c,
                        "ceiling": top,
                        "grpc": ours,
                        "http": {
                            "requests_per_s": http.requests_per_s,
                            "p50_ms": http.p50_ms,
                            "p99_ms": http.p99_ms,
                            "errors": http.errors,
                        },
                    }
                )
    print(
        "\n| c | ceiling req/s (p50 ms) | swell gRPC req/s (p50 ms) | gRPC/ceiling "
        "| swell HTTP req/s (p50 ms) | gRPC/HTTP |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        top, ours, http = row["ceiling"], row["grpc"], row["http"]
        print(
            f"| {row['concurrency']} | {top['requests_per_s']:.0f} ({top['p50_ms']:.2f}) "
            f"| {ours['requests_per_s']:.0f} ({ours['p50_ms']:.2f}) "
            f"| {ours['requests_per_s'] / top['requests_per_s']:.2f} "
            f"| {http['requests_per_s']:.0f} ({http['p50_ms']:.2f}) "
            f"| {ours['requests_per_s'] / http['requests_per_s']:.2f} |"
        )
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"grpc-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(
        json.dumps({"duration_s": args.duration, "haproxy": binary, "rows": rows}, indent=2)
    )
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
