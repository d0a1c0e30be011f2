"""Frames and stream ids: ids wrap, skipping 0 and ids in use; untrusted frames are capped."""

from __future__ import annotations

import asyncio

import pytest

from swell._dataplane import codec
from swell._dataplane.client import Connection, StreamIds
from swell._dataplane.wire import (
    HEADER,
    MAX_STREAM_ID,
    Kind,
    ProtocolError,
    frame,
    read_handshake_frame,
)
from tests.unit.dataplane_fixtures import TOKEN, start_replica, stop_replica


def test_ids_count_up_from_one() -> None:
    ids = StreamIds()
    assert [ids.allocate({}) for _ in range(3)] == [1, 2, 3]


def test_ids_wrap_past_the_u32_limit_and_skip_zero() -> None:
    ids = StreamIds(MAX_STREAM_ID - 1)
    assert [ids.allocate({}) for _ in range(4)] == [MAX_STREAM_ID - 1, MAX_STREAM_ID, 1, 2]
    for stream_id in (MAX_STREAM_ID - 1, MAX_STREAM_ID, 1, 2):
        HEADER.pack(stream_id, Kind.CALL, 0)  # every id fits the u32 header field


def test_ids_still_in_use_are_skipped() -> None:
    ids = StreamIds(MAX_STREAM_ID)
    in_use = {MAX_STREAM_ID: "call", 1: "call", 2: "call", 4: "call"}
    assert ids.allocate(in_use) == 3
    assert ids.allocate(in_use) == 5


def test_an_invalid_first_id_is_refused() -> None:
    for start in (0, MAX_STREAM_ID + 1):
        with pytest.raises(ValueError, match="a stream id is 1 to"):
            StreamIds(start)


def test_calls_keep_working_across_the_wrap() -> None:
    async def scenario() -> list[object]:
        replica = await start_replica()
        connection = await Connection.open(replica.address, TOKEN, replica.replica_id)
        connection._ids = StreamIds(MAX_STREAM_ID - 1)
        try:
            results = []
            for _ in range(3):
                call = connection.start(Kind.CALL, _echo_payload("hi"))
                assert await call.accepted is not None
                results.append((call.stream_id, await call.result))
                connection.done(call)
            return results
        finally:
            await connection.close()
            await stop_replica(replica)

    results = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [stream_id for stream_id, _ in results] == [MAX_STREAM_ID - 1, MAX_STREAM_ID, 1]


def _echo_payload(value: object) -> bytes:
    return codec.dumps(("echo", (value,), {}))


def test_an_untrusted_frame_is_judged_by_its_header_before_its_payload_is_read() -> None:
    async def refused(header: bytes) -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(header)  # only the header: reading any payload would wait forever
        with pytest.raises(ProtocolError) as caught:
            await asyncio.wait_for(read_handshake_frame(reader, Kind.HELLO, 32), 5)
        return str(caught.value)

    async def scenario() -> None:
        assert "(4294967295 bytes)" in await refused(HEADER.pack(0, Kind.HELLO, 2**32 - 1))
        assert "(33 bytes)" in await refused(HEADER.pack(0, Kind.HELLO, 33))
        assert "kind 2" in await refused(HEADER.pack(0, Kind.CALL, 32))
        assert "kind 99" in await refused(HEADER.pack(0, 99, 32))
        assert "on stream 7" in await refused(HEADER.pack(7, Kind.HELLO, 32))
        reader = asyncio.StreamReader()
        reader.feed_data(frame(0, Kind.HELLO, b"n" * 32))
        assert await read_handshake_frame(reader, Kind.HELLO, 32) == b"n" * 32

    asyncio.run(scenario())
