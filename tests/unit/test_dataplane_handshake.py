"""The mutual handshake: neither side unpickles anything from a peer that has not proven itself."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from swell._dataplane import codec
from swell._dataplane.client import Connection
from swell._dataplane.handshake import NONCE_BYTES, PROOF_BYTES, HandshakeError
from swell._dataplane.wire import HEADER, Kind, frame
from swell.exceptions import RequestTimeoutError
from tests.unit.dataplane_fixtures import (
    TOKEN,
    Replica,
    bomb,
    router_for,
    start_impostor,
    start_replica,
    stop_replica,
)

SERVER_PROOF_FRAME = HEADER.size + NONCE_BYTES + PROOF_BYTES


def run(coro: Awaitable[None], timeout_s: float = 30) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)

    asyncio.run(bounded())


async def echo(connection: Connection, value: object) -> object:
    call = connection.start(Kind.CALL, codec.dumps(("echo", (value,), {})))
    assert await call.accepted is not None
    return codec.decode(await call.result, "echo", "Model-1")


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the peer sends until it closes the connection (a reset counts as closed)."""
    received = b""
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def test_caller_and_replica_prove_the_token_to_each_other() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        connection = await Connection.open(replica.address, TOKEN, replica.replica_id)
        try:
            assert await echo(connection, "hello") == "hello"
        finally:
            await connection.close()
            await stop_replica(replica)

    run(scenario())


def test_a_caller_without_the_token_is_refused_and_runs_nothing() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        try:
            with pytest.raises(HandshakeError, match="did not prove it is replica Model-1"):
                await Connection.open(replica.address, "not-the-token", replica.replica_id)
            assert replica.dispatcher.calls == []
        finally:
            await stop_replica(replica)

    run(scenario())


def test_a_wrong_client_proof_is_cut_off_before_anything_is_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def scenario() -> None:
        replica = await start_replica()
        host, _, port = replica.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(frame(0, Kind.HELLO, os.urandom(NONCE_BYTES)))
            header = HEADER.unpack(await reader.readexactly(HEADER.size))
            assert header == (0, Kind.SERVER_PROOF, NONCE_BYTES + PROOF_BYTES)
            await reader.readexactly(NONCE_BYTES + PROOF_BYTES)
            writer.write(frame(0, Kind.CLIENT_PROOF, os.urandom(PROOF_BYTES)))
            writer.write(frame(1, Kind.CALL, bomb(marker)))
            # The replica hangs up on its own: nothing after the proof is answered.
            assert await read_until_closed(reader) == b""
        finally:
            writer.close()
            await stop_replica(replica)
        assert not marker.exists()
        assert replica.dispatcher.calls == []

    run(scenario())


def test_an_oversized_frame_before_the_handshake_is_refused_on_its_header() -> None:
    async def scenario() -> None:
        # A long handshake deadline: only the size check can close the connection in time.
        replica = await start_replica(handshake_deadline_s=60)
        host, _, port = replica.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(HEADER.pack(0, Kind.HELLO, 2**32 - 1))
            assert await asyncio.wait_for(read_until_closed(reader), 5) == b""
        finally:
            writer.close()
            await stop_replica(replica)

    run(scenario())


def test_a_silent_peer_is_closed_at_the_handshake_deadline() -> None:
    async def scenario() -> None:
        replica = await start_replica(handshake_deadline_s=0.3)
        host, _, port = replica.address.rpartition(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        started = time.monotonic()
        try:
            writer.write(frame(0, Kind.HELLO, os.urandom(NONCE_BYTES)))  # then nothing more
            received = await asyncio.wait_for(read_until_closed(reader), 10)
            assert len(received) == SERVER_PROOF_FRAME
            assert time.monotonic() - started >= 0.25
        finally:
            writer.close()
            await stop_replica(replica)

    run(scenario())


Answer = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Path], Awaitable[None]]


async def _proof_of_nonsense(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: Path
) -> None:
    await reader.readexactly(HEADER.size + NONCE_BYTES)
    writer.write(frame(0, Kind.SERVER_PROOF, os.urandom(NONCE_BYTES + PROOF_BYTES)))
    writer.write(frame(1, Kind.RESULT, bomb(marker)))
    await reader.read()


async def _pickles_instead_of_a_proof(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: Path
) -> None:
    await reader.readexactly(HEADER.size + NONCE_BYTES)
    for stream_id in range(4):
        writer.write(frame(stream_id, Kind.ACCEPTED, b"\0\0\0\0"))
        writer.write(frame(stream_id, Kind.RESULT, bomb(marker)))
    await reader.read()


async def _a_huge_frame(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: Path
) -> None:
    writer.write(HEADER.pack(0, Kind.SERVER_PROOF, 2**32 - 1))
    await reader.read()


async def _hangs_up(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, marker: Path
) -> None:
    await reader.readexactly(HEADER.size + NONCE_BYTES)


@pytest.mark.parametrize(
    "answer", [_proof_of_nonsense, _pickles_instead_of_a_proof, _a_huge_frame, _hangs_up]
)
def test_a_caller_trusts_no_impostor(answer: Answer, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def scenario() -> None:
        server, address = await start_impostor(lambda r, w: answer(r, w, marker))
        try:
            with pytest.raises(HandshakeError):
                await Connection.open(address, TOKEN, "Model-1")
        finally:
            server.close()
        assert not marker.exists()

    run(scenario())


def test_a_caller_times_out_on_a_peer_that_never_answers() -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server, address = await start_impostor(silent)
        try:
            with pytest.raises(TimeoutError):
                await Connection.open(address, TOKEN, "Model-1", timeout_s=0.3)
        finally:
            server.close()

    run(scenario())


def test_another_replica_of_the_cluster_is_not_the_one_expected() -> None:
    """A port reused by a newer replica, or a relay to another one, fails the handshake."""

    async def scenario() -> None:
        replica = await start_replica(replica_id="Model-2")
        try:
            with pytest.raises(HandshakeError, match="did not prove it is replica Model-1"):
                await Connection.open(replica.address, TOKEN, "Model-1")
            connection = await Connection.open(replica.address, TOKEN, "Model-2")
            await connection.close()
        finally:
            await stop_replica(replica)

    run(scenario())


def test_the_router_treats_an_impostor_as_unreachable(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"

    async def scenario() -> None:
        server, address = await start_impostor(
            lambda r, w: _pickles_instead_of_a_proof(r, w, marker)
        )
        replica: Replica = await start_replica()
        alone = router_for({"Model-0": address})
        shared = router_for({"Model-0": address, replica.replica_id: replica.address})
        try:
            # With only the impostor known, the call ends at its deadline instead of hanging.
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError, match="no replica of deployment 'Model'"):
                await alone.call("echo", (1,), {}, timeout_s=1.0)
            assert 0.9 < time.monotonic() - started < 5
            # Beside a real replica, every call lands on the real one.
            for value in range(20):
                assert await shared.call("echo", (value,), {}, timeout_s=10) == value
        finally:
            await alone.close()
            await shared.close()
            server.close()
            await stop_replica(replica)
        assert not marker.exists()
        assert replica.dispatcher.calls == ["echo"] * 20

    run(scenario())
