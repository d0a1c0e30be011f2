"""The data-plane server every replica runs, on the same event loop as its HTTP server.

A peer must open with the cluster token before anything it sends is unpickled. A call is
admitted only while the replica has room (``max_ongoing_requests``): ACCEPTED goes back before
any user code runs, REJECTED sends the caller to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from swell._dataplane import codec
from swell._dataplane.wire import CREDIT, LOAD, STREAM_WINDOW, FrameWriter, Kind, read_frame

_HELLO_DEADLINE_S = 10.0
_DRAIN_ABOVE_BYTES = 1 << 20


class Dispatcher(Protocol):
    """Runs a method of the user's deployment."""

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]: ...


class _Credit:
    """How many more stream items the consumer will take: the producer waits at zero."""

    def __init__(self, initial: int) -> None:
        self._available = initial
        self._more = asyncio.Event()

    def grant(self, count: int) -> None:
        self._available += count
        self._more.set()

    async def take(self) -> None:
        while self._available <= 0:
            self._more.clear()
            await self._more.wait()
        self._available -= 1


class ReplicaService:
    """Admission (token, capacity), then the user's method; errors travel back as values."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        token: str,
        max_ongoing: int,
        other_ongoing: Callable[[], int],
    ) -> None:
        self._dispatcher = dispatcher
        self._token = token.encode()
        self._max_ongoing = max_ongoing
        self._other_ongoing = other_ongoing
        self.ongoing = 0
        self._connections: set[asyncio.Task[None]] = set()

    def load(self) -> int:
        return self.ongoing + self._other_ongoing()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                _, kind, token = await asyncio.wait_for(read_frame(reader), _HELLO_DEADLINE_S)
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
                return
            if kind is not Kind.HELLO or not hmac.compare_digest(token, self._token):
                return  # unauthenticated: nothing it sent is unpickled
            await _Connection(self, reader, writer).run()
        except asyncio.CancelledError:
            return  # wait_idle() closing connections at shutdown: an expected end
        finally:
            self._connections.discard(task)
            writer.close()

    async def wait_idle(self, timeout_s: float) -> None:
        """At shutdown: let admitted calls finish, up to ``timeout_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.ongoing and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for task in list(self._connections):
            task.cancel()


class _Connection:
    def __init__(
        self, service: ReplicaService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._service = service
        self._reader = reader
        self._writer = writer
        self._frames = FrameWriter(writer)
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._credits: dict[int, _Credit] = {}

    async def run(self) -> None:
        try:
            while True:
                stream_id, kind, payload = await read_frame(self._reader)
                if kind is Kind.CALL or kind is Kind.STREAM:
                    self._admit(stream_id, kind, payload)
                elif kind is Kind.CANCEL:
                    call = self._calls.get(stream_id)
                    if call is not None:
                        call.cancel()
                elif kind is Kind.CREDIT:
                    credit = self._credits.get(stream_id)
                    if credit is not None:
                        credit.grant(CREDIT.unpack(payload)[0])
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the caller went away: its calls are cancelled below
        finally:
            for call in list(self._calls.values()):
                call.cancel()

    def _admit(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        service = self._service
        if service.load() >= service._max_ongoing:
            self._frames.write(stream_id, Kind.REJECTED)
            return
        service.ongoing += 1
        self._frames.write(stream_id, Kind.ACCEPTED, LOAD.pack(service.load()))
        if kind is Kind.STREAM:
            self._credits[stream_id] = _Credit(STREAM_WINDOW)
        self._calls[stream_id] = asyncio.get_running_loop().create_task(
            self._run(stream_id, kind, payload)
        )

    async def _send(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        self._frames.write(stream_id, kind, payload)
        transport = self._writer.transport
        if transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
            await self._writer.drain()

    async def _run(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        dispatcher = self._service._dispatcher
        try:
            method, args, kwargs = codec.loads(payload)
            if kind is Kind.CALL:
                try:
                    result = codec.encode_result(await dispatcher.call(method, args, kwargs))
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    result = codec.encode_error(error)
                await self._send(stream_id, Kind.RESULT, result)
                return
            credit = self._credits[stream_id]
            try:
                async for item in dispatcher.stream(method, args, kwargs):
                    await credit.take()
                    await self._send(stream_id, Kind.ITEM, codec.encode_result(item))
                end = b""
            except asyncio.CancelledError:
                raise
            except Exception as error:
                end = codec.encode_error(error)
            await self._send(stream_id, Kind.END, end)
        except (asyncio.CancelledError, ConnectionError):
            pass  # cancelled by the caller, or the caller is gone
        finally:
            self._service.ongoing -= 1
            self._calls.pop(stream_id, None)
            self._credits.pop(stream_id, None)


async def start_server(service: ReplicaService, host: str) -> tuple[asyncio.Server, int]:
    """Bind to ``host`` (loopback on one machine) on a free port."""
    server = await asyncio.start_server(service.serve_connection, host, 0, limit=1 << 20)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def stop_server(server: asyncio.Server, service: ReplicaService, grace_s: float) -> None:
    server.close()
    with contextlib.suppress(Exception):
        await service.wait_idle(grace_s)
