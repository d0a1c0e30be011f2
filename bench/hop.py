"""The cost of one handle hop, without HTTP: CPU µs and sends per call, caller and callee in one.

Usage::

    python bench/hop.py [--calls 20000] [--concurrency 1,64] [--stream 32]

A router and a ReplicaService (the real data plane, real loopback sockets, uvloop) share this
process and its loop, so process CPU time per call is what both sides of a hop cost together,
and a loaded machine (which skews req/s) barely moves it. Sends are the data plane's socket
writes on the caller's side (``Connection.sends``; 0 where the code has no counter).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import uvloop  # noqa: E402
from tests.unit.dataplane_fixtures import router_for, start_replica, stop_replica  # noqa: E402


def _sends(router: Any) -> int:
    return sum(getattr(c, "sends", 0) for c in router._connections.values())


async def _run(calls: int, concurrency: int, chunks: int) -> dict[str, float]:
    replica = await start_replica(max_ongoing=1000)
    router = router_for({replica.replica_id: replica.address})
    router._max_ongoing = 1000
    try:
        await router.call("echo", ("warm",), {}, 30.0)

        async def unary(n: int) -> None:
            for _ in range(n):
                await router.call("echo", ("Ada",), {}, 30.0)

        async def streamed(n: int) -> None:
            for _ in range(n):
                async for _item in router.stream("tokens", (chunks,), {}, 30.0):
                    pass

        work = streamed if chunks else unary
        per_worker = calls // concurrency
        before_sends = _sends(router)
        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(work(per_worker) for _ in range(concurrency)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        done = per_worker * concurrency
        return {
            "cpu_us_per_call": cpu / done * 1e6,
            "wall_us_per_call": wall / done * 1e6,
            "caller_sends_per_call": (_sends(router) - before_sends) / done,
        }
    finally:
        await router.close()
        await stop_replica(replica)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--stream", type=int, default=32, help="items per streaming call")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for c in (int(x) for x in args.concurrency.split(",")):
        for label, chunks, calls in (
            ("unary", 0, args.calls),
            (f"stream x{args.stream}", args.stream, args.calls // args.stream),
        ):
            runs = [uvloop.run(_run(calls, c, chunks)) for _ in range(args.rounds)]
            best = min(runs, key=lambda r: r["cpu_us_per_call"])
            each = ", ".join(f"{r['cpu_us_per_call']:.1f}" for r in runs)
            print(
                f"{label:12s} c={c:<3d} CPU {best['cpu_us_per_call']:7.1f} µs/call "
                f"(runs: {each})  "
                f"wall {best['wall_us_per_call']:7.1f} µs/call  "
                f"caller sends {best['caller_sends_per_call']:.2f}/call",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
