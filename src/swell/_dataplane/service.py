"""The data-plane server every replica runs, on the same event loop as its HTTP server.

A peer must finish the mutual handshake (``handshake.py``) before anything it sends is read
past a small size cap, let alone unpickled. A call is admitted only while the replica has room
(``max_ongoing_requests``) and is not draining: ACCEPTED is queued before the call's first
step runs and leaves with that step's output (a call that answers at once sends ACCEPTED and
RESULT in one write); REJECTED sends the caller to another replica. A replica that dies inside
a call's first step, before ACCEPTED leaves, looks to the caller like one that died before
admitting it: the call may be placed again elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from ssl import SSLContext
from typing import Any, Protocol

from swell._context import multiplexed_model_id
from swell._dataplane import codec
from swell._dataplane.handshake import prove_server
from swell._dataplane.wire import (
    CREDIT,
    LOAD,
    STREAM_WINDOW,
    FrameReader,
    FrameWriter,
    Kind,
    ProtocolError,
    Rejection,
    SendCount,
    start_frame_server,
)
from swell._metrics.process import PROCESS
from swell.context import enter_call

logger = logging.getLogger(__name__)

HANDSHAKE_DEADLINE_S = 10.0
_DRAIN_ABOVE_BYTES = 1 << 20
_BUSY = bytes([Rejection.BUSY])
_DRAINING = bytes([Rejection.DRAINING])


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

    def try_take(self) -> bool:
        """Take one without waiting, if there is one (the common case: no await per item)."""
        if self._available > 0:
            self._available -= 1
            return True
        return False

    async def take(self) -> None:
        while self._available <= 0:
            self._more.clear()
            await self._more.wait()
        self._available -= 1


class ReplicaService:
    """Admission (handshake, capacity, draining), then the user's method; errors travel back."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        token: str,
        max_ongoing: int,
        other_ongoing: Callable[[], int],
        *,
        replica_id: str,
        app_name: str = "",
        handshake_deadline_s: float = HANDSHAKE_DEADLINE_S,
    ) -> None:
        self._dispatcher = dispatcher
        self._token = token.encode()
        self._replica_id = replica_id
        self.app_name = app_name
        self._handshake_deadline_s = handshake_deadline_s
        self._max_ongoing = max_ongoing
        self._other_ongoing = other_ongoing
        self.ongoing = 0
        self.draining = False
        self._idle: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._open: set[_Connection] = set()
        self._models = b""  # a JSON list once publish_models() was called, else nothing
        # Socket writes to every caller so far (the regression tests count them per call).
        self.sent = SendCount()

    def load(self) -> int:
        return self.ongoing + self._other_ongoing()

    def publish_models(self, model_ids: list[str]) -> None:
        """Tell every caller which models this replica holds (a MODELS frame on stream 0)."""
        self._models = json.dumps(model_ids).encode()
        for connection in self._open:
            connection.send_models(self._models)

    def start_draining(self) -> None:
        """Turn new calls away (REJECTED, so callers place them elsewhere); admitted ones finish."""
        self.draining = True

    def _finished(self) -> None:
        self.ongoing -= 1
        if self.ongoing == 0 and self._idle is not None:
            self._idle.set()

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            try:
                async with asyncio.timeout(self._handshake_deadline_s):
                    await prove_server(reader, writer, self._token, self._replica_id)
            except (TimeoutError, ConnectionError) as error:
                # Not a member of this cluster (or too slow to say so): nothing it sent was
                # unpickled.
                peer = writer.get_extra_info("peername")
                logger.warning("refused a data-plane connection from %s: %r", peer, error)
                return
            assert isinstance(reader, FrameReader)
            connection = _Connection(self, reader, writer)
            if self._models:
                connection.send_models(self._models)
            self._open.add(connection)
            try:
                await connection.run()
            finally:
                self._open.discard(connection)
        except asyncio.CancelledError:
            return  # wait_idle() closing connections at shutdown: an expected end
        finally:
            self._connections.discard(task)
            writer.close()

    async def wait_idle(self, timeout_s: float) -> None:
        """At shutdown: turn new calls away, let admitted ones finish (up to ``timeout_s``)."""
        self.start_draining()
        if self.ongoing:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._idle.wait()
        for task in list(self._connections):
            task.cancel()


class _Connection:
    """One caller's calls; frames are handled as they arrive (``FrameReader``)."""

    def __init__(
        self, service: ReplicaService, reader: FrameReader, writer: asyncio.StreamWriter
    ) -> None:
        self._service = service
        self._reader = reader
        self._writer = writer
        self._frames = FrameWriter(writer, service.sent)
        self._calls: dict[int, asyncio.Task[None]] = {}
        self._credits: dict[int, _Credit] = {}

    def send_models(self, payload: bytes) -> None:
        self._frames.write(0, Kind.MODELS, payload)

    async def run(self) -> None:
        """Until the caller goes away (or breaks the protocol); then its calls are cancelled."""
        ended = asyncio.get_running_loop().create_future()

        def lost() -> None:
            if not ended.done():
                ended.set_result(None)

        self._reader.dispatch(self._writer.transport, self._on_frame, lost)
        try:
            await ended
        finally:
            for stream_id in list(self._calls):
                self._cancel(stream_id)

    def _on_frame(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        if kind is Kind.CALL or kind is Kind.STREAM:
            self._admit(stream_id, kind, payload)
        elif kind is Kind.CANCEL:
            self._cancel(stream_id)
        elif kind is Kind.CREDIT:
            self._grant(stream_id, payload)

    def _cancel(self, stream_id: int) -> None:
        call = self._calls.get(stream_id)
        if call is None:
            return
        coro = call.get_coro()
        if inspect.iscoroutine(coro) and inspect.getcoroutinestate(coro) == inspect.CORO_CREATED:
            # Cancelled before its first step (CALL and CANCEL read in one go): its coroutine
            # never runs, so neither does its ``finally``. Account for it here.
            self._end(stream_id)
        call.cancel()

    def _end(self, stream_id: int) -> None:
        self._service._finished()
        self._calls.pop(stream_id, None)
        self._credits.pop(stream_id, None)

    def _grant(self, stream_id: int, payload: bytes) -> None:
        if len(payload) != CREDIT.size:
            raise ProtocolError(f"a CREDIT frame of {len(payload)} bytes, not {CREDIT.size}")
        credit = self._credits.get(stream_id)
        if credit is not None:
            credit.grant(CREDIT.unpack(payload)[0])

    def _admit(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        service = self._service
        if service.draining:
            self._frames.write(stream_id, Kind.REJECTED, _DRAINING)
            return
        # An id still in use can only be a wrapped id whose cancelled call has not ended yet.
        if service.load() >= service._max_ongoing or stream_id in self._calls:
            self._frames.write(stream_id, Kind.REJECTED, _BUSY)
            return
        service.ongoing += 1
        if kind is Kind.STREAM:
            self._credits[stream_id] = _Credit(STREAM_WINDOW)
        # The task is scheduled before ACCEPTED is written, so when nothing else is queued
        # the send runs after the call's first step: a call that answers at once sends
        # ACCEPTED and RESULT together (one send, one wake-up for the caller), and one that
        # waits sends ACCEPTED as it does.
        self._calls[stream_id] = asyncio.get_running_loop().create_task(
            self._run(stream_id, kind, payload)
        )
        self._frames.write(stream_id, Kind.ACCEPTED, LOAD.pack(service.load()))

    async def _send(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        self._frames.write(stream_id, kind, payload)
        transport = self._writer.transport
        if transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
            await self._writer.drain()

    async def _run(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        dispatcher = self._service._dispatcher
        try:
            try:
                request = codec.loads(payload)
                method, args, kwargs = request[:3]
                if len(request) > 3:  # made with multiplexed_model_id or inside a request
                    if request[3]:
                        multiplexed_model_id.set(request[3])  # this task is the call's own
                    # The caller's request (its id, route): this call is part of it.
                    enter_call(request[4] if len(request) > 4 else None, self._service.app_name)
            except Exception as error:
                await self._refuse_arguments(stream_id, kind, error)
                return
            if kind is Kind.CALL:
                started = time.perf_counter()
                try:
                    result = codec.encode_result(await dispatcher.call(method, args, kwargs))
                    ok = True
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    result = codec.encode_error(error)
                    ok = False
                PROCESS.received_done(method, ok, time.perf_counter() - started)
                await self._send(stream_id, Kind.RESULT, result)
                return
            credit = self._credits[stream_id]
            try:
                frames = self._frames
                transport = self._writer.transport
                scalars = codec.SCALARS
                async for item in dispatcher.stream(method, args, kwargs):
                    if not credit.try_take():
                        await credit.take()  # the batch so far goes out meanwhile
                    # Batched: out when the generator next waits (or past HOLD_BYTES).
                    cls = type(item)
                    if cls is str:
                        frames.item(stream_id, item, 4 * len(item))  # UTF-8: at most 4 each
                    elif cls in scalars:
                        frames.item(stream_id, item, len(item) if cls is bytes else 0)
                    else:
                        encoded = codec.Encoded(codec.dumps(item))  # as it is now
                        frames.item(stream_id, encoded, len(encoded.data))
                    if transport.get_write_buffer_size() > _DRAIN_ABOVE_BYTES:
                        await self._writer.drain()
                end = b""
            except asyncio.CancelledError:
                raise
            except Exception as error:
                end = codec.encode_error(error)
            await self._send(stream_id, Kind.END, end)
        except (asyncio.CancelledError, ConnectionError):
            pass  # cancelled by the caller, or the caller is gone
        finally:
            self._end(stream_id)

    async def _refuse_arguments(self, stream_id: int, kind: Kind, error: Exception) -> None:
        """Arguments that do not unpickle here: the caller gets the error instead of a hang."""
        failure = codec.undecodable("the arguments of a handle call", error, "the callee's")
        failure.__cause__ = error
        last = Kind.RESULT if kind is Kind.CALL else Kind.END
        await self._send(stream_id, last, codec.encode_error(failure))


async def start_server(
    service: ReplicaService, host: str, ssl: SSLContext | None = None
) -> tuple[asyncio.Server, int]:
    """Bind to ``host`` (loopback on one machine) on a free port; TLS with ``ssl``."""
    server = await start_frame_server(service.serve_connection, host, 0, limit=1 << 20, ssl=ssl)
    port: int = server.sockets[0].getsockname()[1]
    return server, port


async def stop_server(server: asyncio.Server, service: ReplicaService, grace_s: float) -> None:
    """Stop accepting connections, let admitted calls finish within ``grace_s``, then close."""
    server.close()
    with contextlib.suppress(Exception):
        await service.wait_idle(grace_s)
