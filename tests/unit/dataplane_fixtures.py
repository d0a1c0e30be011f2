"""In-process data-plane peers for the unit tests: real sockets on 127.0.0.1, no processes."""

from __future__ import annotations

import asyncio
import operator
import pathlib
import pickle
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from swell._dataplane.router import ClusterContext, Router
from swell._dataplane.service import ReplicaService, start_server, stop_server

T = TypeVar("T")
TOKEN = "unit-test-cluster-token"
# Nothing listens on the discard port: routers' watches fail and keep the set they were given.
NO_CONTROLLER = "http://127.0.0.1:9"


class Unloadable:
    """Pickles fine; unpickling it raises ZeroDivisionError wherever that happens."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.truediv, (1, 0))


class _Touch:
    def __init__(self, path: pathlib.Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.path,))


def bomb(path: pathlib.Path) -> bytes:
    """A pickle that creates ``path`` when it is unpickled: the proof that something did."""
    return pickle.dumps(_Touch(path))


class UnloadableError(Exception):
    """An exception that pickles but cannot be rebuilt from its pickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.truediv, (1, 0))


@dataclass
class RecordingDispatcher:
    """A deployment whose every call is recorded; ``hang`` and ``stall`` wait to be cancelled.

    A stream yields ``range(args[0])``, then per method: ``stall`` waits, ``unloadable_last``
    (``unloadable_alone``: in a batch of its own) yields what the caller cannot unpickle,
    ``unpicklable_last`` what the callee cannot pickle. ``items`` yields ``args[0]``'s items.
    """

    calls: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    release: asyncio.Event | None = None
    produced: int = 0  # items the streams have yielded so far

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        self.calls.append(method)
        if method == "echo":
            return args[0]
        if method == "unloadable":
            return Unloadable()
        if method == "raise_unloadable":
            raise UnloadableError("the weights are corrupt")
        if method in ("hang", "held"):
            try:
                if method == "held":
                    assert self.release is not None
                    await self.release.wait()
                    return "released"
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.append(method)
                raise
        raise AttributeError(f"no method {method!r}")

    async def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        self.calls.append(method)
        if method == "mutated":  # one list, yielded again after each change
            same: list[int] = []
            for index in range(args[0]):
                same.append(index)
                yield same
            return
        if method == "items":  # the items the caller passed, as they are
            for item in args[0]:
                yield item
            return
        if method == "blobs":  # args[0] items of args[1] bytes each
            for index in range(args[0]):
                yield bytes([index % 256]) * args[1]
            return
        for index in range(args[0]):
            self.produced += 1
            yield index
        if method == "unloadable_last":
            yield Unloadable()
        if method == "unloadable_alone":  # sent on its own, after the others
            await asyncio.sleep(0)
            yield Unloadable()
        if method == "unpicklable_last":
            yield threading.Lock()
        if method == "stall":
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled.append(method)
                raise


class LoopThread:
    """An event loop on its own thread, so blocking sockets and hypothesis can drive it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-dataplane")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        async def cancel_all() -> None:
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all(), 10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class Replica:
    """A ReplicaService listening on 127.0.0.1, as a replica process would run it."""

    replica_id: str
    service: ReplicaService
    server: asyncio.Server
    address: str
    dispatcher: RecordingDispatcher


async def start_replica(
    replica_id: str = "Model-1",
    max_ongoing: int = 100,
    handshake_deadline_s: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> Replica:
    dispatcher = RecordingDispatcher(release=asyncio.Event())
    service = ReplicaService(
        dispatcher,
        TOKEN,
        max_ongoing,
        lambda: 0,
        replica_id=replica_id,
        handshake_deadline_s=handshake_deadline_s,
    )
    server, port = await start_server(service, "127.0.0.1", tls)
    return Replica(replica_id, service, server, f"127.0.0.1:{port}", dispatcher)


async def stop_replica(replica: Replica) -> None:
    await stop_server(replica.server, replica.service, 0)
    await replica.server.wait_closed()


def router_for(replicas: dict[str, str], token: str = TOKEN, tls_ca: str | None = None) -> Router:
    """A router that knows ``replicas`` (id → address), as if the controller had sent them."""
    router = Router("default", "Model", ClusterContext(NO_CONTROLLER, token, tls_ca))
    router._apply(
        {
            "version": 1,
            "replicas": replicas,
            "max_ongoing_requests": 100,
            "max_queued_requests": -1,
        }
    )
    return router


@contextmanager
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    try:
        yield thread
    finally:
        thread.close()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def start_impostor(handler: Handler) -> tuple[asyncio.Server, str]:
    """Something else listening where a replica was: runs ``handler`` on each connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
