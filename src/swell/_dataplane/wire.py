"""The frames replicas exchange for handle calls, over one TCP connection per peer.

Each frame is a 9-byte header (stream id: u32, kind: u8, payload length: u32) and a payload.
Many calls share a connection, each on its own stream id. A connection opens with HELLO
carrying the cluster token; a peer that sends anything else first is disconnected before any
payload is unpickled.

Client → server: HELLO, CALL (a unary call), STREAM (a streaming call), CREDIT (the client
can take that many more items), CANCEL.
Server → client: ACCEPTED (admitted, before any user code runs; carries the replica's load),
REJECTED (at capacity: try another replica), RESULT, ITEM, END (a stream finished; its
payload is empty or an encoded error).
"""

from __future__ import annotations

import asyncio
import struct
from enum import IntEnum

HEADER = struct.Struct("!IBI")
LOAD = struct.Struct("!I")
CREDIT = struct.Struct("!I")
MAX_FRAME_BYTES = 2**32 - 1
# Items a streaming call may have in flight before the consumer reads them.
STREAM_WINDOW = 16


class Kind(IntEnum):
    HELLO = 1
    CALL = 2
    STREAM = 3
    CREDIT = 4
    CANCEL = 5
    ACCEPTED = 10
    REJECTED = 11
    RESULT = 12
    ITEM = 13
    END = 14


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
