"""A closed-loop gRPC load generator for bench_grpc.py.

Usage: ``python -m bench._grpc_load PROTO_DIR TARGET C SECONDS [APP]``.

C workers share one channel (HTTP/2 multiplexing, as gRPC clients do) and each sends the next
unary Ping as soon as the last one answers; prints one JSON line: requests, req/s, p50/p99 ms,
errors. APP, when given, goes in the ``application`` metadata. It runs in its own process so
its CPU is not the server's.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def _load(target: str, concurrency: int, seconds: float, app: str | None) -> dict[str, float]:
    import bench_noop_pb2  # type: ignore[import-not-found]
    import bench_noop_pb2_grpc  # type: ignore[import-not-found]
    import grpc

    latencies: list[float] = []
    errors = 0
    metadata = (("application", app),) if app else None
    async with grpc.aio.insecure_channel(target) as channel:
        stub = bench_noop_pb2_grpc.NoopStub(channel)
        request = bench_noop_pb2.Msg(text="ping")
        await stub.Ping(request, timeout=10, metadata=metadata)  # connected before the clock starts
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds

        async def worker() -> None:
            nonlocal errors
            while loop.time() < end:
                start = time.perf_counter()
                try:
                    await stub.Ping(request, timeout=10, metadata=metadata)
                except grpc.RpcError:
                    errors += 1
                    continue
                latencies.append(time.perf_counter() - start)

        began = loop.time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = loop.time() - began
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0
        )

    return {
        "requests": len(latencies),
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    import uvloop

    app = sys.argv[5] if len(sys.argv) > 5 else None
    result = uvloop.run(_load(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), app))
    print(json.dumps(result), flush=True)
