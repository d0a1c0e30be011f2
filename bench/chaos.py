"""Chaos under load, for minutes: each fault repeated against a fresh instance under a steady
mix of unary, streamed and composed requests on 127.0.0.1; prints what was sent and what failed.

    .venv/bin/python bench/chaos.py                      # every fault, 60 s each
    .venv/bin/python bench/chaos.py --duration 20 --only kill_replicas,rolling_update

The same scenarios run (shorter, with assertions) in ``tests/chaos``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.chaos import scenarios
from tests.chaos.service import ChaosService

Scenario = Callable[[ChaosService, float], scenarios.Outcome]

SCENARIOS: dict[str, Scenario] = {
    "kill_replicas": lambda service, s: scenarios.kill_replicas(service, s, every_s=5.0),
    "stop_a_replica": lambda service, s: scenarios.stop_a_replica(service, min(s, 20.0)),
    "kill_haproxy": lambda service, s: scenarios.kill_haproxy(service),
    "kill_controller": lambda service, s: scenarios.kill_controller(service),
    "rolling_update": lambda service, s: scenarios.rolling_update(service, stream_s=s),
    "dies_while_starting": lambda service, s: scenarios.dies_while_starting(service, s),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per fault")
    parser.add_argument("--only", default="", help="comma-separated scenario names")
    args = parser.parse_args()
    chosen = [n for n in args.only.split(",") if n] or list(SCENARIOS)
    rows = []
    for name in chosen:
        with tempfile.TemporaryDirectory(prefix=f"swell-chaos-{name}-") as workdir:
            service = scenarios.fresh_service(Path(workdir))
            began = time.monotonic()
            try:
                outcome = SCENARIOS[name](service, args.duration)
            finally:
                service.stop()
        sent = sum(r.sent for r in outcome.reports.values())
        failed = {k: r.failed for k, r in outcome.reports.items() if r.failed}
        rows.append(
            {
                "fault": outcome.fault,
                "times": outcome.faults,
                "seconds": round(time.monotonic() - began, 1),
                "sent": sent,
                "failed": failed,
                "by_kind": {k: [r.sent, r.failed] for k, r in outcome.reports.items()},
                "why": {k: dict(r.reasons) for k, r in outcome.reports.items() if r.reasons},
                "facts": outcome.facts,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print("\n| fault | times | requests sent | failed (by kind) | facts |")
    print("|---|---:|---:|---|---|")
    for row in rows:
        failed_text = ", ".join(f"{k} {v}" for k, v in row["failed"].items()) or "0"
        print(
            f"| {row['fault']} | {row['times']} | {row['sent']} | {failed_text} | {row['facts']} |"
        )


if __name__ == "__main__":
    main()
