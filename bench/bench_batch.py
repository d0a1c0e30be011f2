"""``@swell.batch`` against the same model called once per request, in one run.

Usage (from anywhere; the repo root is put on ``sys.path``)::

    python bench/bench_batch.py [--duration 5] [--concurrency 1,16,64] [--rounds 2]

One swell instance serves both apps of ``bench/batch_apps.py`` (one replica each; the model
runs one call at a time, a call costing 4 ms plus 0.1 ms per input) under ``/unbatched`` and
``/batched``. At each concurrency ``wrk -t1`` loads one, then the other, for ``--rounds``
rounds (A B A B, so both share the machine's drift); the table gives req/s, p50 and p99, and
the batched/unbatched ratio of the summed req/s. Results also go to
``bench/results/batch-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import swell  # noqa: E402
from bench._common import (  # noqa: E402
    HOST,
    READY_DEADLINE_S,
    RESULTS_DIR,
    WrkResult,
    free_port,
    measure,
    wait_for_200,
)
from bench.batch_apps import batched, unbatched  # noqa: E402


def _table(rows: list[tuple[int, list[WrkResult], list[WrkResult]]]) -> str:
    lines = [
        "| c | unbatched req/s | p50 / p99 ms | batched req/s | p50 / p99 ms "
        "| batched ÷ unbatched |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency, plain, batch in rows:
        plain_rps = sum(r.requests_per_s for r in plain) / len(plain)
        batch_rps = sum(r.requests_per_s for r in batch) / len(batch)
        lines.append(
            f"| {concurrency} | {plain_rps:,.0f} | {plain[-1].latency()} | {batch_rps:,.0f} | "
            f"{batch[-1].latency()} | {batch_rps / plain_rps:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated levels")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]

    port = free_port()
    swell.start(http_options={"host": HOST, "port": port}, admin_port=0)
    try:
        urls = {}
        for name, app in (("unbatched", unbatched), ("batched", batched)):
            swell.run(app, name=name, route_prefix=f"/{name}")
            urls[name] = f"http://{HOST}:{port}/{name}?text=hi"
            wait_for_200(urls[name], READY_DEADLINE_S)
        rows = []
        for concurrency in levels:
            results: dict[str, list[WrkResult]] = {"unbatched": [], "batched": []}
            for _ in range(args.rounds):
                for name in ("unbatched", "batched"):
                    results[name].append(measure(name, urls[name], concurrency, args.duration))
            rows.append((concurrency, results["unbatched"], results["batched"]))
    finally:
        swell.shutdown()

    table = _table(rows)
    print(table)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"batch-{time.strftime('%Y%m%d-%H%M%S')}.json"
    report = {
        "machine": platform.platform(),
        "rows": [
            {
                "concurrency": c,
                "unbatched": [asdict(r) for r in p],
                "batched": [asdict(r) for r in b],
            }
            for c, p, b in rows
        ],
        "table": table,
    }
    path.write_text(json.dumps(report, indent=2, default=str))
    print(f"results: {path}")
    errors = sum(r.errors for _, p, b in rows for r in (*p, *b))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
