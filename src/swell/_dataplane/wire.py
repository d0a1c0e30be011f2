"""The frames replicas exchange for handle calls, over one TCP connection per peer.

Each frame is a 9-byte header (stream id: u32, kind: u8, payload length: u32) and a payload.
Many calls share a connection, each on its own stream id (1 to 2**32 - 1, reused once free).

A connection opens with a mutual handshake on stream 0, in which each side proves it holds the
cluster token without sending it (``handshake.py``)::

    client → server  HELLO         client nonce (32 bytes)
    server → client  SERVER_PROOF  server nonce (32) + HMAC-SHA256(token, server label, nonces,
                                   the replica id the client expects)
    client → server  CLIENT_PROOF  HMAC-SHA256(token, client label, nonces, replica id)

Until a peer has proven itself, each frame it sends is judged by its header before its payload
is read (the kind and exact size the handshake expects next, 64 bytes at most), nothing it
sends is unpickled, and any other frame closes the connection. The client sends no call
before it has checked SERVER_PROOF.

Then, client → server: CALL (a unary call), STREAM (a streaming call), CREDIT (the client
can take that many more items), CANCEL.
Server → client: ACCEPTED (admitted; ahead of any other frame of the call; carries the
replica's load), REJECTED (not admitted: try another replica; one byte says why, see
``Rejection``), RESULT, ITEMS (the items a stream's generator yielded since the last send, as
one pickled list, see ``codec.encode_items``), ITEM (one item alone, its own pickle), END (a
stream finished; its payload is empty or an encoded error), and MODELS on stream 0 (the
model ids the replica holds, a JSON list: sent when the connection opens if it holds any,
and whenever they change, so callers send a model's calls where it is loaded). A CALL or
STREAM payload is (method, args, kwargs), or (method, args, kwargs, model id) for a call made
with ``multiplexed_model_id``.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from enum import IntEnum
from ssl import SSLContext
from typing import Any

from swell._dataplane.codec import encode_items

HEADER = struct.Struct("!IBI")
_HEADER_BYTES = HEADER.size
LOAD = struct.Struct("!I")
CREDIT = struct.Struct("!I")
MAX_FRAME_BYTES = 2**32 - 1
MAX_STREAM_ID = 2**32 - 1
# The largest frame a peer that has not finished the handshake may send: each handshake frame
# has one exact size (32 or 64 bytes), checked before its payload is read.
MAX_HANDSHAKE_FRAME_BYTES = 64
# Items a streaming call may have in flight before the consumer reads them.
STREAM_WINDOW = 16


class Kind(IntEnum):
    HELLO = 1
    CALL = 2
    STREAM = 3
    CREDIT = 4
    CANCEL = 5
    SERVER_PROOF = 6
    CLIENT_PROOF = 7
    ACCEPTED = 10
    REJECTED = 11
    RESULT = 12
    # 13 was ITEM with an (ok, value) payload before items were batched: a peer that still
    # sends it breaks the protocol loudly instead of being misread.
    END = 14
    MODELS = 15
    ITEM = 16
    ITEMS = 17


# Frame kinds by their byte, so a received frame's kind costs a dict lookup, not an enum call.
KINDS: dict[int, Kind] = {kind.value: kind for kind in Kind}


class Rejection(IntEnum):
    """Why a replica turned a call away (REJECTED's one-byte payload)."""

    BUSY = 0  # at max_ongoing_requests: try another replica, or this one again soon
    DRAINING = 1  # shutting down: take no more calls there


class ProtocolError(ValueError):
    """A peer sent a frame that breaks the protocol; the connection is closed."""


def frame(stream_id: int, kind: Kind, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise ValueError(f"a payload of {len(payload)} bytes is over the 4 GiB frame limit")
    return HEADER.pack(stream_id, kind, len(payload)) + payload


def write_frame(
    writer: asyncio.StreamWriter, stream_id: int, kind: Kind, payload: bytes = b""
) -> None:
    """Queue a frame; large payloads are written without being copied into the header."""
    if len(payload) > 65536:
        writer.write(HEADER.pack(stream_id, kind, len(payload)))
        writer.write(payload)
    else:
        writer.write(frame(stream_id, kind, payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, Kind, bytes]:
    header = await reader.readexactly(HEADER.size)
    stream_id, kind, length = HEADER.unpack(header)
    payload = await reader.readexactly(length) if length else b""
    return stream_id, Kind(kind), payload


async def read_handshake_frame(reader: asyncio.StreamReader, kind: Kind, length: int) -> bytes:
    """The payload of the next frame from a peer not yet trusted, judged by its header first.

    The frame must be ``kind`` on stream 0 with exactly ``length`` bytes (at most
    MAX_HANDSHAKE_FRAME_BYTES), or ProtocolError is raised before any payload is read.
    """
    assert length <= MAX_HANDSHAKE_FRAME_BYTES
    stream_id, got, got_length = HEADER.unpack(await reader.readexactly(HEADER.size))
    if (stream_id, got, got_length) != (0, kind, length):
        raise ProtocolError(
            f"expected {kind.name} ({length} bytes) on stream 0, got a frame of kind {got} "
            f"({got_length} bytes) on stream {stream_id}"
        )
    return await reader.readexactly(length)


def next_stream_id(stream_id: int) -> int:
    """The id after ``stream_id``: wraps from 2**32 - 1 to 1 (0 is the handshake's)."""
    return stream_id + 1 if stream_id < MAX_STREAM_ID else 1


class SendCount:
    """Socket writes made by one or more FrameWriters (the regression tests hold it per call)."""

    __slots__ = ("sends",)

    def __init__(self) -> None:
        self.sends = 0


class FrameWriter:
    """Coalesces the frames written in one event-loop iteration into one send.

    Under load many calls admit, answer and start within the same iteration; one write per
    iteration instead of one per frame saves a system call for each of them. Headers and
    payloads are queued as they are and joined once, so a payload is copied once on its way
    to the socket. ``count`` counts the sends.

    A stream's items (``item``) are held in a batch that takes the place of one frame among
    the others and is encoded as the iteration's frames go out: the items a generator yields
    without waiting cost one frame, one pickle and one wake-up of the caller together.
    """

    __slots__ = ("_batches", "_held", "_loop", "_pending", "_scheduled", "count", "writer")

    # Batched item bytes (roughly) past which the batches go out at once rather than at the
    # end of the iteration, so a stream of large items is written (and drained) as it goes.
    HOLD_BYTES = 65536

    def __init__(self, writer: asyncio.StreamWriter, count: SendCount | None = None) -> None:
        self.writer = writer
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        # stream id -> (its frame's place in _pending, the items so far)
        self._batches: dict[int, tuple[int, list[Any]]] = {}
        self._held = 0
        self._scheduled = False
        self.count = SendCount() if count is None else count

    def write(self, stream_id: int, kind: Kind, payload: bytes = b"") -> None:
        length = len(payload)
        if length > 65536:
            self.flush()
            write_frame(self.writer, stream_id, kind, payload)
            self.count.sends += 1
            return
        pending = self._pending
        pending.append(HEADER.pack(stream_id, kind, length))
        if length:
            pending.append(payload)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def item(self, stream_id: int, item: Any, size: int) -> None:
        """Add ``item`` (a scalar or a ``codec.Encoded``, ``size`` bytes at most) to its batch."""
        if size > MAX_FRAME_BYTES - 65536:
            raise ValueError(f"a stream item of {size} bytes is over the 4 GiB frame limit")
        batch = self._batches.get(stream_id)
        if batch is None:
            pending = self._pending
            self._batches[stream_id] = (len(pending), [item])
            pending.append(b"")  # the batch's place, filled when it goes out
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self.flush)
        else:
            batch[1].append(item)
        if size > 64:
            self._held += size
            if self._held > self.HOLD_BYTES:
                self.flush()

    def _encode_batches(self) -> None:
        pending = self._pending
        # Last place first, so filling one with two entries leaves the earlier places valid.
        for stream_id, (place, items) in reversed(self._batches.items()):
            batch, payload = encode_items(items)
            header = HEADER.pack(stream_id, Kind.ITEMS if batch else Kind.ITEM, len(payload))
            pending[place : place + 1] = (header, payload)
        self._batches.clear()
        self._held = 0

    def flush(self) -> None:
        self._scheduled = False
        if self._batches:
            self._encode_batches()
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.writer.is_closing():
                self.writer.write(data)
                self.count.sends += 1


FrameSink = Callable[[int, Kind, bytes], None]


class FrameReader(asyncio.StreamReader):
    """A StreamReader for the handshake, then a frame parser that needs no reading task.

    Until ``dispatch`` the handshake reads it as any StreamReader. From then on each frame is
    handed to ``on_frame`` as soon as its last byte arrives, inside the transport's callback:
    no task wakes up to read, so an answer reaches its caller one loop iteration sooner.
    A frame that breaks the protocol, or an exception from ``on_frame``, closes the
    connection; ``on_lost`` runs once when it ends, however it ends.
    """

    def __init__(self, limit: int, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=limit, loop=loop)
        self._frames = bytearray()
        self._on_frame: FrameSink | None = None
        self._on_lost: Callable[[], None] | None = None
        self._transport_ref: asyncio.BaseTransport | None = None

    def dispatch(
        self, transport: asyncio.BaseTransport, on_frame: FrameSink, on_lost: Callable[[], None]
    ) -> None:
        """Hand every frame from here on (and any already buffered) to ``on_frame``."""
        # What arrived right after the handshake (a caller may send calls with its proof).
        buffered: bytearray = self.__dict__["_buffer"]
        leftover = bytes(buffered)
        buffered.clear()
        self._transport_ref = transport
        self._on_frame = on_frame
        self._on_lost = on_lost
        if isinstance(transport, asyncio.ReadTransport):
            transport.resume_reading()  # in case the handshake's buffer had paused it
        ended = self.exception() is not None or self.at_eof()
        if leftover:
            self.feed_data(leftover)
        if ended:
            self._lost()

    def feed_data(self, data: bytes) -> None:  # type: ignore[override]
        on_frame = self._on_frame
        if on_frame is None:
            super().feed_data(data)
            return
        frames = self._frames
        frames += data
        size = len(frames)
        offset = 0
        try:
            while size - offset >= _HEADER_BYTES:
                stream_id, kind, length = HEADER.unpack_from(frames, offset)
                end = offset + _HEADER_BYTES + length
                if end > size:
                    break
                payload = bytes(frames[offset + _HEADER_BYTES : end]) if length else b""
                offset = end
                known = KINDS.get(kind)
                if known is None:
                    raise ProtocolError(f"a frame of unknown kind {kind}")
                on_frame(stream_id, known, payload)
                if self._on_frame is None:
                    return  # the connection ended while that frame was handled
        except Exception:
            self._lost()
            return
        del frames[:offset]

    def feed_eof(self) -> None:
        if self._on_frame is None:
            super().feed_eof()
        else:
            self._lost()

    def set_exception(self, exc: Exception) -> None:
        if self._on_frame is None:
            super().set_exception(exc)
        else:
            self._lost()

    def _lost(self) -> None:
        on_lost = self._on_lost
        self._on_frame = None
        self._on_lost = None
        self._frames.clear()
        if self._transport_ref is not None:
            self._transport_ref.close()
        if on_lost is not None:
            on_lost()


TLS_HANDSHAKE_DEADLINE_S = 10.0

ClientConnected = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def open_frame_connection(
    host: str, port: int, limit: int, ssl: SSLContext | None = None
) -> tuple[FrameReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` with a FrameReader (over TLS with ``ssl``)."""
    loop = asyncio.get_running_loop()
    reader = FrameReader(limit, loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await loop.create_connection(lambda: protocol, host, port, ssl=ssl)
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


async def start_frame_server(
    connected: ClientConnected, host: str, port: int, limit: int, ssl: SSLContext | None = None
) -> asyncio.Server:
    """``asyncio.start_server`` whose connections read through a FrameReader (TLS: ``ssl``)."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        return asyncio.StreamReaderProtocol(FrameReader(limit, loop), connected, loop=loop)

    if ssl is None:
        return await loop.create_server(factory, host, port)
    # A peer that never finishes the TLS handshake holds a socket no longer than this.
    return await loop.create_server(
        factory, host, port, ssl=ssl, ssl_handshake_timeout=TLS_HANDSHAKE_DEADLINE_S
    )
