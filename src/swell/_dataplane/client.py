"""The calling side of the data plane: one multiplexed connection per callee replica.

A connection is used only after the replica proved, in the handshake, that it is the replica
the caller meant to reach in this cluster; nothing is unpickled from it before that.
"""

from __future__ import annotations

import asyncio
import math
import ssl
from collections import deque
from collections.abc import Callable, Mapping

from swell._dataplane.handshake import HandshakeError, prove_client
from swell._dataplane.wire import (
    CREDIT,
    LOAD,
    MAX_STREAM_ID,
    FrameReader,
    FrameWriter,
    Kind,
    Rejection,
    next_stream_id,
    open_frame_connection,
)

CONNECT_DEADLINE_S = 5.0
_DRAINING = bytes([Rejection.DRAINING])


class ConnectionLost(Exception):
    """The connection to the callee closed; ``accepted`` says whether the call had started."""

    def __init__(self, accepted: bool) -> None:
        super().__init__("the connection to the replica was lost")
        self.accepted = accepted


class CallExpired(Exception):
    """The call's deadline passed while its caller waited; the callee was told to cancel."""


class Call:
    """One call in flight: its admission, then its result."""

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[int | None] = loop.create_future()
        self.result: asyncio.Future[bytes] = loop.create_future()
        self.finished = False
        # Set with REJECTED: the replica is shutting down, so the router avoids it for a while.
        self.draining = False

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.ACCEPTED:
            if not self.accepted.done():
                self.accepted.set_result(LOAD.unpack(payload)[0])
        elif kind is Kind.REJECTED:
            self.draining = payload == _DRAINING
            if not self.accepted.done():
                self.accepted.set_result(None)
            self.finished = True
        elif kind is Kind.RESULT:
            self.finished = True
            if not self.result.done():
                self.result.set_result(payload)
        else:
            self._on_item(kind, payload)

    def _on_item(self, kind: Kind, payload: bytes) -> None:
        """ITEM or END: only a streaming call has any."""

    def _on_lost(self) -> None:
        admission = self.accepted
        accepted = (
            admission.done()
            and not admission.cancelled()
            and admission.exception() is None
            and admission.result() is not None
        )
        self._fail(ConnectionLost(accepted))

    def _answered(self) -> bool:
        return self.result.done()

    def expire(self) -> None:
        """The deadline passed: stop waiting, and have the callee cancel the call.

        A no-op when what the caller waits for is already there (a result, a queued item).
        """
        if self._answered():
            return
        self._fail(CallExpired())
        self.cancel()

    def _fail(self, error: Exception) -> None:
        for future in (self.accepted, self.result):
            if not future.done():
                future.set_exception(error)
                future.exception()  # retrieved: the router handles it through await

    def cancel(self) -> None:
        """Tell the callee to cancel the call (its task gets CancelledError)."""
        if not self.finished:
            self.finished = True
            self._connection.send(self.stream_id, Kind.CANCEL)


class StreamCall(Call):
    """A streaming call: its admission, then its items (a unary call has no queue to build)."""

    def __init__(self, connection: Connection, stream_id: int) -> None:
        super().__init__(connection, stream_id)
        # ITEMS, ITEM and END frames, or the error that ends the stream (ConnectionLost,
        # CallExpired).
        self.items: deque[tuple[Kind, bytes] | Exception] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def _push(self, entry: tuple[Kind, bytes] | Exception) -> None:
        self.items.append(entry)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_item(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.END:
            self.finished = True
        self._push((kind, payload))

    def _answered(self) -> bool:
        return bool(self.items)

    def _fail(self, error: Exception) -> None:
        super()._fail(error)
        self._push(error)

    def grant(self, count: int) -> None:
        """The consumer took ``count`` more items: the callee may send that many more."""
        self._connection.send(self.stream_id, Kind.CREDIT, CREDIT.pack(count))

    def take(self) -> tuple[Kind, bytes] | None:
        """The next frame (ITEMS, ITEM or END) if one is here (None if not); raises what
        ended the stream."""
        items = self.items
        if not items:
            return None
        entry = items.popleft()
        if isinstance(entry, Exception):
            items.appendleft(entry)  # every later take raises it too
            raise entry
        return entry

    async def wait(self, deadlines: Deadlines, timeout_s: float) -> tuple[Kind, bytes]:
        """``take``, waiting for an item for up to ``timeout_s`` (then CallExpired).

        Only the wait counts: the time the consumer spends between items does not.
        """
        loop = asyncio.get_running_loop()
        deadlines.set(self, loop.time() + timeout_s)
        try:
            while not self.items:
                self._waiter = loop.create_future()
                await self._waiter
        finally:
            self._waiter = None
            deadlines.discard(self)
        entry = self.take()
        assert entry is not None
        return entry


class Deadlines:
    """The deadlines of every call from one router, served by a single timer.

    The timer is armed at the earliest deadline; a call that ends in time only leaves the
    table, so a call costs a dict insert and delete rather than a timer of its own.
    """

    __slots__ = ("_armed_at", "_entries", "_loop", "_timer")
    # Deadlines this close to the timer count as due, so an early wake-up does not spin.
    _SLACK_S = 0.001

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._entries: dict[Call, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._armed_at = math.inf

    def set(self, call: Call, deadline: float) -> None:
        """Expire ``call`` at ``deadline`` (loop time) unless discarded first."""
        self._entries[call] = deadline
        if deadline < self._armed_at:
            self._arm(deadline)

    def discard(self, call: Call) -> None:
        self._entries.pop(call, None)

    def _arm(self, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._armed_at = when
        self._timer = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._armed_at = math.inf
        due = self._loop.time() + self._SLACK_S
        expired = [call for call, deadline in self._entries.items() if deadline <= due]
        for call in expired:
            del self._entries[call]
            call.expire()
        if self._entries:
            self._arm(min(self._entries.values()))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._armed_at = math.inf
        self._entries.clear()


class StreamIds:
    """Stream ids for one connection: 1 to 2**32 - 1 in turn, wrapping, skipping ids in use."""

    __slots__ = ("_next",)

    def __init__(self, start: int = 1) -> None:
        if not 0 < start <= MAX_STREAM_ID:
            raise ValueError(f"a stream id is 1 to {MAX_STREAM_ID}, not {start}")
        self._next = start

    def allocate(self, in_use: Mapping[int, object]) -> int:
        if len(in_use) >= MAX_STREAM_ID:
            raise RuntimeError(f"all {MAX_STREAM_ID} stream ids of a connection are in use")
        stream_id = self._next
        while stream_id in in_use:
            stream_id = next_stream_id(stream_id)
        self._next = next_stream_id(stream_id)
        return stream_id


class Connection:
    """A connection to one replica, shared by every call from this loop to it.

    Frames are handled as they arrive (``FrameReader``): no task reads the socket.
    """

    def __init__(
        self,
        reader: FrameReader,
        writer: asyncio.StreamWriter,
        on_models: Callable[[bytes], None] | None = None,
    ) -> None:
        self._on_models = on_models
        self._writer = writer
        self._frames = FrameWriter(writer)
        self._calls: dict[int, Call] = {}
        self._ids = StreamIds()
        self.closed = False
        reader.dispatch(writer.transport, self._on_frame, self._on_lost)

    @classmethod
    async def open(
        cls,
        address: str,
        token: str,
        replica_id: str,
        timeout_s: float = CONNECT_DEADLINE_S,
        on_models: Callable[[bytes], None] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Connection:
        """Connect to ``address`` and check that ``replica_id`` of this cluster answers there.

        ``on_models`` gets each MODELS payload (the replica's loaded models) from the start.
        ``tls``: the cluster's client context (the replica must present a certificate the
        cluster CA signed); the token handshake then runs inside TLS.

        Raises HandshakeError (a ConnectionError) when the peer cannot prove it (a certificate
        that does not verify included), OSError when nothing listens, TimeoutError past
        ``timeout_s``.
        """
        host, _, port = address.rpartition(":")
        async with asyncio.timeout(timeout_s):
            try:
                reader, writer = await open_frame_connection(
                    host, int(port), limit=1 << 20, ssl=tls
                )
            except ssl.SSLCertVerificationError as error:
                raise HandshakeError(
                    f"the replica at {address} presented a certificate the cluster CA "
                    f"(--tls-ca) does not accept: {error.verify_message}"
                ) from None
            except (ssl.SSLError, ConnectionResetError) as error:
                if tls is None:
                    raise
                reason = getattr(error, "reason", None) or type(error).__name__
                raise HandshakeError(
                    f"the TLS handshake with {address} failed ({reason}): does it listen with "
                    "TLS (--tls-cert)?"
                ) from None
            try:
                await prove_client(reader, writer, token.encode(), replica_id)
            except BaseException:
                writer.close()
                raise
        return cls(reader, writer, on_models)

    @property
    def sends(self) -> int:
        """Socket writes on this connection so far (the regression tests count them per call)."""
        return self._frames.count.sends

    def send(self, stream_id: int, kind: Kind, payload: bytes = b"") -> None:
        if not self.closed:
            self._frames.write(stream_id, kind, payload)

    def start(self, kind: Kind, payload: bytes) -> Call:
        stream_id = self._ids.allocate(self._calls)
        call = StreamCall(self, stream_id) if kind is Kind.STREAM else Call(self, stream_id)
        self._calls[stream_id] = call
        self._frames.write(stream_id, kind, payload)
        return call

    def done(self, call: Call) -> None:
        self._calls.pop(call.stream_id, None)

    async def drain(self) -> None:
        await self._writer.drain()

    def _on_frame(self, stream_id: int, kind: Kind, payload: bytes) -> None:
        call = self._calls.get(stream_id)
        if call is not None:
            call._on_frame(kind, payload)
        elif kind is Kind.MODELS and self._on_models is not None:
            self._on_models(payload)

    def _on_lost(self) -> None:
        """The replica went away or broke the protocol (or we closed): its calls are lost."""
        if self.closed:
            return
        self.closed = True
        calls = list(self._calls.values())
        self._calls.clear()
        for call in calls:
            call._on_lost()
        self._writer.close()

    async def close(self) -> None:
        self._on_lost()
