"""Benchmark model multiplexing: how many requests find their model where they land, and req/s.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_multiplex.py [--duration 5] [--concurrency 32] [--models 12]

One swell run serves ``bench.multiplex_apps`` (3 replicas, 4 models each at most, a load costs
20 ms). After one request per model (the warm-up), each run sends requests for random models
for ``--duration`` seconds from ``--concurrency`` concurrent clients (over HTTP ``wrk -t1``
with ``multiplex.lua``; for handles asyncio tasks in this process), and reports the share of
requests whose replica already held the model, and req/s:

- ``http plain``, ``handle plain``: no model id at all (each path's other runs are measured
  against its plain run, in the same round; rounds are interleaved and summed);
- ``http affinity``: the ``serve_multiplexed_model_id`` header (HAProxy keeps each model on
  one replica);
- ``http no affinity``: the same id in a header HAProxy does not route on (leastconn);
- ``handle affinity``: ``handle.options(multiplexed_model_id=...)`` from this process;
- ``handle no affinity``: the id as an argument (power of two choices, models ignored).

Results go to stdout (markdown) and to ``bench/results/multiplex-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import httpx  # noqa: E402

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    HOST,
    READY_DEADLINE_S,
    RESULTS_DIR,
    free_port,
    parse_wrk,
    wait_for_200,
)
from bench.multiplex_apps import (  # noqa: E402
    LOAD_S,
    MODELS_PER_REPLICA,
    UNROUTED_HEADER,
    models_app,
)
from swell._ingress.haproxy_manager import find_haproxy_binary, haproxy_version  # noqa: E402
from swell._protocol import MULTIPLEXED_MODEL_ID_HEADER  # noqa: E402

REPLICAS = 3
LUA = Path(__file__).with_name("multiplex.lua")


@dataclass(frozen=True)
class Run:
    name: str
    requests: int
    hits: int
    errors: int
    seconds: float

    @property
    def share(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def drive(
    name: str, one: Callable[[str], Awaitable[bool]], models: list[str], concurrency: int, s: float
) -> Run:
    """``concurrency`` tasks calling ``one(random model)`` until ``s`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + s
    counts = {"requests": 0, "hits": 0, "errors": 0}

    async def worker() -> None:
        while loop.time() < deadline:
            try:
                hit = await one(random.choice(models))
            except swell.SwellError:
                counts["errors"] += 1
                continue
            counts["requests"] += 1
            counts["hits"] += hit

    started = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(name, counts["requests"], counts["hits"], counts["errors"], loop.time() - started)


def wrk_run(
    name: str, url: str, header: str, models: int, concurrency: int, duration: float
) -> Run:
    """One ``wrk -t1`` run with ``multiplex.lua``: random models in ``header``, hits counted."""
    environment = {**os.environ, "MODELS": str(models), "HEADER": header, "PATH_": "/mux"}
    command = [
        "wrk",
        "-t1",
        "--latency",
        f"-c{concurrency}",
        f"-d{max(1, round(duration))}s",
        "-s",
        str(LUA),
        url,
    ]
    output = subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=duration + 60, check=True
    ).stdout
    hits, answers = (int(n) for n in re.findall(r"^HITS (\d+) (\d+)$", output, re.M)[0])
    result = parse_wrk(name, concurrency, output)
    return Run(name, answers, hits, result.errors, answers / result.requests_per_s)


async def handle_runs(models: list[str], concurrency: int, duration: float) -> list[Run]:
    handle = swell.get_deployment_handle("Models", "mux")

    async def affinity(model: str) -> bool:
        answer = await handle.options(multiplexed_model_id=model).predict.remote()
        return bool(answer["hit"])

    async def unrouted(model: str) -> bool:
        return bool((await handle.predict.remote(model))["hit"])

    async def plain(model: str) -> bool:
        return bool((await handle.predict.remote())["hit"])

    runs = []
    for name, one in (
        ("handle plain (no model)", plain),
        ("handle affinity", affinity),
        ("handle no affinity", unrouted),
    ):
        print(f"{name} ...", flush=True)
        await drive(name, one, models, concurrency, 1.0)  # settle (not counted)
        runs.append(await drive(name, one, models, concurrency, duration))
    return runs


def measure_all(
    url: str, models: list[str], concurrency: int, duration: float, rounds: int
) -> list[Run]:
    """Every run once per round, interleaved (the machine is shared: noise hits all alike)."""
    for model in models:  # the warm-up: one request per model, one at a time
        httpx.get(url + "/mux", headers={MULTIPLEXED_MODEL_ID_HEADER: model}, timeout=30)
    runs: list[Run] = []
    for _ in range(rounds):
        # An unrouted run leaves models wherever requests landed; the settle run of the next
        # affinity run (1 s, not counted) puts them back.
        for name, header in (
            ("http plain (no model)", ""),
            ("http affinity", MULTIPLEXED_MODEL_ID_HEADER),
            ("http no affinity", UNROUTED_HEADER),
        ):
            print(f"{name} ...", flush=True)
            wrk_run(name, url, header, len(models), concurrency, 1.0)  # settle (not counted)
            runs.append(wrk_run(name, url, header, len(models), concurrency, duration))
        runs += asyncio.run(handle_runs(models, concurrency, duration))
    totals: dict[str, Run] = {}
    for run in runs:
        seen = totals.get(run.name)
        totals[run.name] = (
            run
            if seen is None
            else Run(
                run.name,
                seen.requests + run.requests,
                seen.hits + run.hits,
                seen.errors + run.errors,
                seen.seconds + run.seconds,
            )
        )
    return list(totals.values())


def table(runs: list[Run]) -> str:
    """Each run's req/s against the plain run of the same path (HTTP or handle)."""
    plain = {run.name.split()[0]: run.requests_per_s for run in runs if "plain" in run.name}
    lines = [
        "| run | requests | share holding the model | req/s | req/s / plain | errors |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        base = plain.get(run.name.split()[0], 0.0)
        ratio = run.requests_per_s / base if base else 0.0
        lines.append(
            f"| {run.name} | {run.requests} | {run.share:.3f} | {run.requests_per_s:,.0f} "
            f"| {ratio:.2f} | {run.errors} |"
        )
    return "\n".join(lines)


@contextlib.contextmanager
def swell_running() -> Iterator[int]:
    port = free_port()
    try:
        swell.start(http_options={"host": HOST, "port": port}, admin_port=0)
        yield port
    finally:
        swell.shutdown()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of all runs")
    parser.add_argument(
        "--models", type=int, default=REPLICAS * MODELS_PER_REPLICA, help="distinct model ids"
    )
    args = parser.parse_args()
    models = [f"model-{index}" for index in range(args.models)]
    haproxy = find_haproxy_binary(None)
    with swell_running() as port:
        swell.run(models_app, name="mux", route_prefix="/mux")
        url = f"http://{HOST}:{port}"
        wait_for_200(url + "/mux", READY_DEADLINE_S)
        runs = measure_all(url, models, args.concurrency, args.duration, args.rounds)
    header = (
        f"{len(models)} models over {REPLICAS} replicas ({MODELS_PER_REPLICA} each at most, "
        f"a load costs {LOAD_S * 1000:.0f} ms), {args.concurrency} concurrent clients, "
        f"{args.duration:.0f} s per run x {args.rounds} rounds, "
        f"HAProxy {haproxy_version(haproxy)}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}"
    )
    markdown = table(runs)
    print(f"\n{header}\n\n{markdown}")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"multiplex-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report: dict[str, Any] = {
        "header": header,
        "runs": [
            {**asdict(run), "share": run.share, "requests_per_s": run.requests_per_s}
            for run in runs
        ],
        "table_markdown": markdown,
    }
    out.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
