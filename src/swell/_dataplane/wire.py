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
Server → client: ACCEPTED (admitted, before any user code runs; carries the replica's load),
REJECTED (not admitted: try another replica; one byte says why, see ``Rejection``), RESULT,
ITEM, END (a stream finished; its payload is empty or an encoded error), and MODELS on
stream 0 (the model ids the replica holds, a JSON list: sent when the connection opens if it
holds any, and whenever they change, so callers send a model's calls where it is loaded).
A CALL or STREAM payload is (method, args, kwargs), or (method, args, kwargs, model id) for
a call made with ``multiplexed_model_id``.
"""

from __future__ import annotations

import asyncio
import struct
from enum import IntEnum

HEADER = struct.Struct("!IBI")
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
    ITEM = 13
    END = 14
    MODELS = 15


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


class FrameWriter:
    """Coalesces the frames written in one event-loop iteration into one send.

    Under load many calls admit, answer and start within the same iteration; one write per
    iteration instead of one per frame saves a system call for each of them.
    """

    __slots__ = ("_loop", "_pending", "_scheduled", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, stream_id: int, kind: Kind, payload: bytes = b"") -> None:
        if len(payload) > 65536:
            self.flush()
            write_frame(self.writer, stream_id, kind, payload)
            return
        self._pending.append(frame(stream_id, kind, payload))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self.writer.is_closing():
                self.writer.write(data)
