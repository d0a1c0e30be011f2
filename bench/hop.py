"""The cost of one handle hop, without HTTP: CPU µs and sends per call, caller and callee in one.

Usage::

    python bench/hop.py [--calls 20000] [--concurrency 1,64] [--stream 32] [--tls off,on]
                        [--via router,handle]

A router and a ReplicaService (the real data plane, real loopback sockets, uvloop) share this
process and its loop, so process CPU time per call is what both sides of a hop cost together,
and a loaded machine (which skews req/s) barely moves it. Sends are the data plane's socket
writes on the caller's side (``Connection.sends``; 0 where the code has no counter).
``--tls off,on`` (the default) measures each shape in plain TCP and over TLS (--tls-cert: a
throwaway CA and certificate), rounds alternating, and prints the TLS/plain ratio.
``--via handle`` makes the calls as user code does, through a ``DeploymentHandle`` (``await
handle.echo.remote(x)``, ``async for`` over ``handle.options(stream=True).tokens.remote(n)``),
to a replica whose dispatcher is the real one (the user's class behind ``UserCallable`` and
the access-log layer, its lines dropped); ``--via router`` calls ``router.call`` and
``router.stream`` on a test dispatcher, the data plane alone.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import uvloop  # noqa: E402
from tests.certs import TestCA  # noqa: E402
from tests.unit.dataplane_fixtures import (  # noqa: E402
    TOKEN,
    router_for,
    start_replica,
    stop_replica,
)

import swell.handle  # noqa: E402
from swell._cluster_tls import ClusterTLS, load  # noqa: E402
from swell._dataplane.service import ReplicaService, start_server, stop_server  # noqa: E402
from swell._logging.access import AccessLog, LoggedDispatcher  # noqa: E402
from swell._replica.user_callable import UserCallable  # noqa: E402
from swell.handle import DeploymentHandle  # noqa: E402


class _Model:
    """The callee for ``--via handle``: what bench/apps.py's Model does."""

    async def echo(self, name: str) -> str:
        return name

    async def tokens(self, n: int) -> Any:
        for i in range(n):
            yield f"tok{i} "


def _sends(router: Any) -> int:
    return sum(getattr(c, "sends", 0) for c in router._connections.values())


async def _run(
    calls: int, concurrency: int, chunks: int, tls: ClusterTLS | None, via: str = "router"
) -> dict[str, float]:
    server: ssl.SSLContext | None = tls.server_context() if tls else None
    if via == "handle":
        user = UserCallable(_Model, True, 1000)
        await user.construct((), {})
        dispatcher = LoggedDispatcher(user, AccessLog(True, write=lambda line: None))
        service = ReplicaService(dispatcher, TOKEN, 1000, lambda: 0, replica_id="Model-1")
        listener, port = await start_server(service, "127.0.0.1", server)
        replica_id, address = service._replica_id, f"127.0.0.1:{port}"
    else:
        replica = await start_replica(max_ongoing=1000, tls=server)
        replica_id, address = replica.replica_id, replica.address
    router = router_for({replica_id: address}, tls_ca=tls.ca if tls else None)
    router._max_ongoing = 1000
    loop = asyncio.get_running_loop()
    swell.handle._routers.setdefault(loop, {})[("default", "Model")] = router
    swell.handle.set_cluster_context(router._cluster)
    handle = DeploymentHandle("Model", "default")
    streaming = handle.options(stream=True)
    try:
        await router.call("echo", ("warm",), {}, 30.0)

        async def unary(n: int) -> None:
            if via == "handle":
                for _ in range(n):
                    await handle.echo.remote("Ada")
                return
            for _ in range(n):
                await router.call("echo", ("Ada",), {}, 30.0)

        async def streamed(n: int) -> None:
            for _ in range(n):
                if via == "handle":
                    async for _item in streaming.tokens.remote(chunks):
                        pass
                else:
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
        swell.handle._routers.pop(loop, None)
        swell.handle.set_cluster_context(None)
        await router.close()
        if via == "handle":
            await stop_server(listener, service, 0)
            await user.shutdown()
        else:
            await stop_replica(replica)


def _measure(
    label: str,
    c: int,
    chunks: int,
    calls: int,
    via: str,
    rounds: int,
    chosen: list[str],
    modes: dict[str, ClusterTLS | None],
) -> None:
    runs: dict[str, list[dict[str, float]]] = {m: [] for m in chosen}
    for _ in range(rounds):  # alternating: a busy neighbour slows both alike
        for mode in chosen:
            runs[mode].append(uvloop.run(_run(calls, c, chunks, modes[mode], via)))
    best = {}
    for mode in chosen:
        best[mode] = min(runs[mode], key=lambda r: r["cpu_us_per_call"])
        each = ", ".join(f"{r['cpu_us_per_call']:.1f}" for r in runs[mode])
        print(
            f"{label:19s} c={c:<3d} tls={mode:3s} CPU "
            f"{best[mode]['cpu_us_per_call']:7.1f} µs/call (runs: {each})  "
            f"wall {best[mode]['wall_us_per_call']:7.1f} µs/call  "
            f"caller sends {best[mode]['caller_sends_per_call']:.2f}/call",
            flush=True,
        )
    if len(best) == 2:
        ratio = best["on"]["cpu_us_per_call"] / best["off"]["cpu_us_per_call"]
        print(f"{label:19s} c={c:<3d} TLS/plain CPU per call: {ratio:.2f}x", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--stream", type=int, default=32, help="items per streaming call")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", default="off,on", help="off, on, or off,on (both, compared)")
    parser.add_argument(
        "--via", default="router,handle", help="router (data plane alone), handle, or both"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        ca = TestCA(Path(directory))
        cert = ca.issue("cluster")
        cluster = load(str(cert.cert), str(cert.key), str(ca.cert))
        modes = {"off": None, "on": cluster}
        chosen = [m.strip() for m in args.tls.split(",")]
        for via in (v.strip() for v in args.via.split(",")):
            prefix = "handle " if via == "handle" else ""
            for c in (int(x) for x in args.concurrency.split(",")):
                for label, chunks, calls in (
                    (f"{prefix}unary", 0, args.calls),
                    (f"{prefix}stream x{args.stream}", args.stream, args.calls // args.stream),
                ):
                    _measure(label, c, chunks, calls, via, args.rounds, chosen, modes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
