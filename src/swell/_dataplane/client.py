"""The calling side of the data plane: one multiplexed connection per callee replica."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from swell._dataplane.wire import (
    CREDIT,
    LOAD,
    STREAM_WINDOW,
    FrameWriter,
    Kind,
    read_frame,
    write_frame,
)

_CONNECT_DEADLINE_S = 5.0


class ConnectionLost(Exception):
    """The connection to the callee closed; ``accepted`` says whether the call had started."""

    def __init__(self, accepted: bool) -> None:
        super().__init__("the connection to the replica was lost")
        self.accepted = accepted


class Call:
    """One call in flight: its admission, then its result or its stream of items."""

    def __init__(self, connection: Connection, stream_id: int) -> None:
        self._connection = connection
        self.stream_id = stream_id
        loop = asyncio.get_running_loop()
        self.accepted: asyncio.Future[int | None] = loop.create_future()
        self.result: asyncio.Future[bytes] = loop.create_future()
        self.items: asyncio.Queue[tuple[Kind, bytes] | None] = asyncio.Queue()
        self.finished = False

    def _on_frame(self, kind: Kind, payload: bytes) -> None:
        if kind is Kind.ACCEPTED:
            if not self.accepted.done():
                self.accepted.set_result(LOAD.unpack(payload)[0])
        elif kind is Kind.REJECTED:
            if not self.accepted.done():
                self.accepted.set_result(None)
            self.finished = True
        elif kind is Kind.RESULT:
            self.finished = True
            if not self.result.done():
                self.result.set_result(payload)
        else:  # ITEM or END
            if kind is Kind.END:
                self.finished = True
            self.items.put_nowait((kind, payload))

    def _on_lost(self) -> None:
        accepted = self.accepted.done() and self.accepted.result() is not None
        error = ConnectionLost(accepted)
        if not self.accepted.done():
            self.accepted.set_exception(error)
            self.accepted.exception()  # retrieved: the router handles it through await
        if not self.result.done():
            self.result.set_exception(error)
            self.result.exception()
        self.items.put_nowait(None)

    def cancel(self) -> None:
        """Tell the callee to cancel the call (its task gets CancelledError)."""
        if not self.finished:
            self.finished = True
            self._connection.send(self.stream_id, Kind.CANCEL)

    def grant(self, count: int) -> None:
        self._connection.send(self.stream_id, Kind.CREDIT, CREDIT.pack(count))

    async def stream_items(self) -> AsyncIterator[tuple[Kind, bytes]]:
        """ITEM payloads, then the END payload; grants credit as items are consumed."""
        consumed = 0
        while True:
            entry = await self.items.get()
            if entry is None:
                raise ConnectionLost(accepted=True)
            yield entry
            if entry[0] is Kind.END:
                return
            consumed += 1
            if consumed >= STREAM_WINDOW // 2:
                self.grant(consumed)
                consumed = 0


class Connection:
    """A connection to one replica, shared by every call from this loop to it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._frames = FrameWriter(writer)
        self._calls: dict[int, Call] = {}
        self._next_id = 1
        self.closed = False
        self._task = asyncio.get_running_loop().create_task(self._read(), name="swell-dataplane")

    @classmethod
    async def open(cls, address: str, token: str) -> Connection:
        host, _, port = address.rpartition(":")
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), limit=1 << 20), _CONNECT_DEADLINE_S
        )
        write_frame(writer, 0, Kind.HELLO, token.encode())
        return cls(reader, writer)

    def send(self, stream_id: int, kind: Kind, payload: bytes = b"") -> None:
        if not self.closed:
            self._frames.write(stream_id, kind, payload)

    def start(self, kind: Kind, payload: bytes) -> Call:
        stream_id = self._next_id
        self._next_id += 1
        call = Call(self, stream_id)
        self._calls[stream_id] = call
        self._frames.write(stream_id, kind, payload)
        return call

    def done(self, call: Call) -> None:
        self._calls.pop(call.stream_id, None)

    async def drain(self) -> None:
        await self._writer.drain()

    async def _read(self) -> None:
        try:
            while True:
                stream_id, kind, payload = await read_frame(self._reader)
                call = self._calls.get(stream_id)
                if call is not None:
                    call._on_frame(kind, payload)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self.closed = True
            for call in list(self._calls.values()):
                call._on_lost()
            self._calls.clear()
            self._writer.close()

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
