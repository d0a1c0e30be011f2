"""Fuzz a real ReplicaService from a peer that never proves the cluster token.

Whatever it sends (random bytes, or well-formed frames of every kind with random ids, lengths
and payloads, pickles that create a file when unpickled among them), the replica closes the
connection, unpickles nothing, runs nothing, and keeps serving authenticated callers.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swell._dataplane import codec
from swell._dataplane.client import Connection
from swell._dataplane.handshake import NONCE_BYTES, PROOF_BYTES
from swell._dataplane.wire import HEADER, MAX_FRAME_BYTES, MAX_STREAM_ID, Kind, frame
from tests.unit.dataplane_fixtures import (
    TOKEN,
    LoopThread,
    Replica,
    bomb,
    loop_thread,
    start_replica,
    stop_replica,
)

_EXAMPLES = 150
_CLOSE_DEADLINE_S = 10.0
_HANDSHAKE = ((Kind.HELLO, NONCE_BYTES), (Kind.CLIENT_PROOF, PROOF_BYTES))


@st.composite
def frames(draw: st.DrawFn, pickles: list[bytes]) -> bytes:
    """One frame: any kind (known or not), any stream id, a payload whose length may lie."""
    kind = draw(st.sampled_from(list(Kind)) | st.integers(0, 255))
    stream_id = draw(st.sampled_from([0, 1, MAX_STREAM_ID]) | st.integers(0, MAX_STREAM_ID))
    payload = draw(
        st.sampled_from(pickles)
        | st.binary(max_size=300)
        | st.sampled_from([b"", os.urandom(NONCE_BYTES), os.urandom(PROOF_BYTES)])
    )
    length = draw(st.just(len(payload)) | st.integers(0, MAX_FRAME_BYTES))
    return HEADER.pack(stream_id, kind, length) + payload


def well_shaped_prefix() -> st.SearchStrategy[bytes]:
    """Nothing, a valid HELLO, or a valid HELLO and a CLIENT_PROOF of the right shape."""
    hello = frame(0, Kind.HELLO, os.urandom(NONCE_BYTES))
    proof = st.binary(min_size=PROOF_BYTES, max_size=PROOF_BYTES).map(
        lambda guess: hello + frame(0, Kind.CLIENT_PROOF, guess)
    )
    return st.just(b"") | st.just(hello) | proof


def peer_input(pickles: list[bytes]) -> st.SearchStrategy[bytes]:
    """What one unauthenticated peer sends: random bytes or frames, after a prefix."""
    sequence = st.lists(frames(pickles), min_size=1, max_size=6).map(b"".join)
    fuzz = st.binary(min_size=1, max_size=2048) | sequence
    return st.tuples(well_shaped_prefix(), fuzz).map(b"".join)


def refused_on_its_own(data: bytes) -> bool:
    """Whether ``data`` holds a complete frame header the handshake must refuse.

    Then the replica hangs up without waiting for more; otherwise it waits for the rest (or
    for end of input, or for its handshake deadline).
    """
    offset = 0
    for kind, length in _HANDSHAKE:
        if len(data) < offset + HEADER.size:
            return False
        if HEADER.unpack_from(data, offset) != (0, kind, length):
            return True
        offset += HEADER.size + length
        if len(data) < offset:
            return False
    return True  # a complete CLIENT_PROOF, which random bytes cannot get right


def send_and_wait_for_close(address: str, data: bytes, half_close: bool) -> bytes:
    host, _, port = address.rpartition(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=_CLOSE_DEADLINE_S) as peer:
        try:
            peer.sendall(data)
            if half_close:
                with contextlib.suppress(OSError):  # already closed by the replica
                    peer.shutdown(socket.SHUT_WR)
            while chunk := peer.recv(65536):
                received += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed with our bytes unread: a reset, which is a close too
    return received


@pytest.fixture
def replica() -> Iterator[tuple[LoopThread, Replica]]:
    with loop_thread() as thread:
        started = thread.run(start_replica(handshake_deadline_s=5))
        try:
            yield thread, started
        finally:
            thread.run(stop_replica(started))


def test_an_unauthenticated_peer_gets_nothing_unpickled_and_nothing_run(
    replica: tuple[LoopThread, Replica], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread, served = replica
    marker = tmp_path / "unpickled"
    pickles = [
        bomb(marker),
        codec.dumps(("echo", (bomb(marker),), {})),
        codec.encode_result(1),
    ]
    unpickled: list[bytes] = []
    real_loads = codec.loads

    def recording_loads(data: bytes) -> Any:
        unpickled.append(data)
        return real_loads(data)

    monkeypatch.setattr(codec, "loads", recording_loads)

    @settings(
        max_examples=_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(peer_input(pickles))
    def one_peer(data: bytes) -> None:
        received = send_and_wait_for_close(
            served.address, data, half_close=not refused_on_its_own(data)
        )
        # At most the replica's own proof comes back (it answers a valid HELLO), never more.
        assert len(received) <= HEADER.size + NONCE_BYTES + PROOF_BYTES
        if len(received) >= HEADER.size:
            assert HEADER.unpack_from(received) == (0, Kind.SERVER_PROOF, 64)
        assert unpickled == []
        assert not marker.exists()
        assert served.dispatcher.calls == []

    one_peer()

    async def authenticated_call() -> object:
        connection = await Connection.open(served.address, TOKEN, served.replica_id)
        try:
            call = connection.start(Kind.CALL, codec.dumps(("echo", ("still here",), {})))
            assert await call.accepted is not None
            return codec.decode(await call.result, "echo", served.replica_id)
        finally:
            await connection.close()

    assert thread.run(authenticated_call()) == "still here"
    assert served.dispatcher.calls == ["echo"]
    assert served.service.ongoing == 0
