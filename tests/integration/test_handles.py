"""Handles: calls straight between replica processes, over swell's framed protocol on TCP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import socket
import threading
from pathlib import Path

import pytest

import swell
from swell.handle import DeploymentHandle
from tests.integration import apps
from tests.integration.conftest import Swell, pid_alive, replica_stats, wait_until
from tests.unit.dataplane_fixtures import bomb


def model_replicas(app: str = "default") -> list[swell.serve_status.ReplicaStatus]:
    return swell.status().applications[app].deployments["Model"].replicas


def test_composition_and_chaining_through_http(serve: Swell) -> None:
    swell.run(apps.composed_app)
    assert serve.client.post("/", json={"x": [1, 2, 3]}).json() == {"y": 7.0, "chained": 3.5}


def test_driver_handles_sync_async_and_streaming(serve: Swell) -> None:
    ingress = swell.run(apps.composed_app)
    assert isinstance(ingress, DeploymentHandle)
    assert swell.get_app_handle("default").deployment_name == "Composer"
    model = swell.get_deployment_handle("Model", "default")
    assert model.predict.remote([1.0, 2.0]).result(timeout_s=30) == 3.0
    assert list(model.options(stream=True).tokens.remote(3)) == ["tok0 ", "tok1 ", "tok2 "]

    async def from_async_code() -> tuple[float, list[str]]:
        value = await model.predict.remote([2.0, 2.0])
        streamed = [t async for t in model.options(stream=True, method_name="tokens").remote(2)]
        return value, streamed

    assert asyncio.run(from_async_code()) == (4.0, ["tok0 ", "tok1 "])
    # Both replicas of Model take calls.
    seen = {model.whoami.remote().result(timeout_s=30) for _ in range(40)}
    assert seen == {r.replica_id for r in model_replicas()}


def test_hundred_megabyte_payloads(serve: Swell) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default")
    payload = os.urandom(1024) * (100 * 1024)
    assert model.echo_size.remote(payload).result(timeout_s=60) == len(payload)
    assert model.echo.remote(payload).result(timeout_s=60) == payload


def test_remote_exception_carries_type_message_and_traceback(serve: Swell) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default")
    with pytest.raises(swell.RemoteError) as caught:
        model.fail.remote("no such key").result(timeout_s=30)
    error = caught.value
    assert error.remote_type == "KeyError"
    assert "no such key" in error.remote_message
    assert "raise KeyError(message)" in error.remote_traceback
    assert isinstance(error.cause, KeyError)
    # Asking for a method that does not exist is an error too, not a hang.
    with pytest.raises(swell.RemoteError, match="no method 'nope'"):
        model.nope.remote().result(timeout_s=30)


def test_cancel_reaches_the_callee(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default")
    marker = tmp_path / "hang"
    response = model.hang.remote(str(marker))
    wait_until(marker.exists, 30, "the callee to start")
    response.cancel()
    wait_until(Path(f"{marker}.cancelled").exists, 30, "the callee's task to be cancelled")


def test_client_disconnect_cancels_downstream_calls(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.composed_app)
    marker = tmp_path / "hang"
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as client:
        client.sendall(f"GET /hang?marker={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        wait_until(marker.exists, 30, "the model call to start")
    wait_until(Path(f"{marker}.cancelled").exists, 30, "the model's task to be cancelled")


def test_slow_stream_consumer_bounds_the_producer(serve: Swell) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default")
    stream = model.options(stream=True).firehose.remote(5000, 64 * 1024)
    first = next(iter(stream))
    assert len(first) == 64 * 1024
    counts: list[int] = []

    def settled() -> bool:
        counts.append(model.produced_so_far.remote().result(timeout_s=30))
        return len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3]

    wait_until(settled, 30, "the producer to stop producing while nobody reads")
    # Flow control stops it after a bounded number of 64 KiB chunks, far from all 5000.
    assert counts[-1] < 500
    stream.cancel()


def test_max_queued_requests_answers_503(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.gated_app)
    gate = tmp_path / "gate"
    statuses: list[int] = []

    def call() -> None:
        statuses.append(serve.client.get("/", params={"gate": str(gate)}).status_code)

    first = threading.Thread(target=call)
    first.start()
    wait_until(lambda: _gated_load() == 1, 30, "the first call to occupy Gated")
    second = threading.Thread(target=call)
    second.start()
    # The second waits in GateCaller's queue (max_queued_requests=1); the third is refused.
    wait_until(lambda: _queued_in_caller() == 1, 30, "the second call to queue")
    third = serve.client.get("/", params={"gate": str(gate)})
    assert third.status_code == 503
    assert "max_queued_requests=1" in third.text
    gate.touch()
    first.join(30)
    second.join(30)
    assert statuses == [200, 200]


def _gated_load() -> int:

    replica = swell.status().applications["default"].deployments["Gated"].replicas[0]
    assert replica.control_address is not None
    return replica_stats(replica.control_address)["load"]


def _queued_in_caller() -> int:

    replica = swell.status().applications["default"].deployments["GateCaller"].replicas[0]
    # The caller's ingress replica has two requests in flight: one running, one queued.
    assert replica.control_address is not None
    return replica_stats(replica.control_address)["ongoing"] - 1


def test_calls_without_the_cluster_token_are_refused(serve: Swell, tmp_path: Path) -> None:
    from swell._dataplane import codec
    from swell._dataplane.handshake import NONCE_BYTES, PROOF_BYTES
    from swell._dataplane.wire import HEADER, Kind, frame

    swell.run(apps.single_model_app)
    address = model_replicas()[0].data_address
    assert address is not None and address.startswith("127.0.0.1:")
    host, _, port = address.rpartition(":")
    marker = tmp_path / "unpickled"
    call = frame(1, Kind.CALL, codec.dumps(("predict", ([1.0],), {}))) + frame(
        2, Kind.CALL, bomb(marker)
    )
    # No handshake, or the old token-in-HELLO: the replica hangs up without answering.
    for opening in (b"", frame(0, Kind.HELLO, b"guess")):
        with socket.create_connection((host, int(port)), timeout=10) as peer:
            peer.sendall(opening + call)
            assert _read_until_closed(peer) == b""
    # A proper HELLO gets the replica's proof; a wrong proof back gets nothing more.
    with socket.create_connection((host, int(port)), timeout=10) as peer:
        peer.sendall(frame(0, Kind.HELLO, os.urandom(NONCE_BYTES)))
        answer = b""
        while len(answer) < HEADER.size + NONCE_BYTES + PROOF_BYTES:
            chunk = peer.recv(1024)
            assert chunk, "the replica hung up instead of proving itself"
            answer += chunk
        assert HEADER.unpack_from(answer) == (0, Kind.SERVER_PROOF, NONCE_BYTES + PROOF_BYTES)
        peer.sendall(frame(0, Kind.CLIENT_PROOF, os.urandom(PROOF_BYTES)) + call)
        assert _read_until_closed(peer) == b""
    assert not marker.exists()
    # A caller of this cluster, which proves the token, is answered.
    assert swell.get_deployment_handle("Model").predict.remote([1.0]).result(timeout_s=30) == 1.0


def _read_until_closed(peer: socket.socket) -> bytes:
    """What the peer sends until it hangs up (a reset, when it left our bytes unread, too)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := peer.recv(1024):
            received += chunk
    return received


def test_arguments_and_answers_that_do_not_unpickle_raise(serve: Swell) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default")
    # The callee cannot unpickle the argument: the caller gets the error, not a hang.
    with pytest.raises(swell.RemoteError) as caught:
        model.echo.remote(apps.Unloadable()).result(timeout_s=30)
    assert caught.value.remote_type == "SerializationError"
    assert "could not unpickle the arguments" in caught.value.remote_message
    assert "ZeroDivisionError" in caught.value.remote_message
    # The caller cannot unpickle the answer.
    with pytest.raises(swell.SerializationError, match="the answer of 'unloadable' from replica"):
        model.unloadable.remote().result(timeout_s=30)
    assert model.predict.remote([1.0, 1.0]).result(timeout_s=30) == 2.0


def test_a_call_past_its_timeout_is_cancelled_in_the_callee(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.single_model_app)
    model = swell.get_deployment_handle("Model", "default").options(timeout_s=1)
    marker = tmp_path / "hang"
    with pytest.raises(swell.RequestTimeoutError, match="did not finish within timeout_s=1"):
        model.hang.remote(str(marker)).result(timeout_s=30)
    assert marker.exists()
    wait_until(Path(f"{marker}.cancelled").exists, 30, "the callee's task to be cancelled")


def test_a_replica_stopping_under_load_fails_no_call(serve: Swell) -> None:
    swell.run(apps.steady_app)
    steady = swell.get_deployment_handle("Steady", "default").work
    replicas = swell.status().applications["default"].deployments["Steady"].replicas
    victim = replicas[0]
    assert victim.pid is not None
    served_by: list[str] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load(seed: int) -> None:
        # Calls of random length, so the replica is never idle between them by chance.
        durations = random.Random(seed)
        while not stop.is_set():
            try:
                served_by.append(steady.remote(durations.uniform(0.05, 0.15)).result(timeout_s=30))
            except Exception as error:
                failures.append(error)

    workers = [threading.Thread(target=load, args=(seed,)) for seed in range(16)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: victim.replica_id in served_by[-20:], 30, "load on the victim")
        # A SIGTERM drains the replica: it finishes what it admitted and turns the rest away.
        os.kill(victim.pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(victim.pid), 30, "the victim to exit")
        after_exit = len(served_by)
        wait_until(lambda: len(served_by) > after_exit + 50, 30, "more calls to complete")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert failures == []


def test_callee_killed_mid_load(serve: Swell) -> None:
    swell.run(apps.composed_app)
    model = swell.get_deployment_handle("Model", "default")
    victim = model_replicas()[0]
    assert victim.pid is not None
    outcomes: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                model.predict.remote([1.0]).result(timeout_s=30)
                outcomes.append("ok")
            except swell.ReplicaUnavailableError:
                outcomes.append("unavailable")

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(outcomes) > 50, 30, "load to start")
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(
            lambda: (
                victim.replica_id not in {r.replica_id for r in model_replicas()}
                and len(model_replicas()) == 2
            ),
            30,
            "the killed replica to be replaced",
        )
        after_kill = len(outcomes)
        wait_until(lambda: len(outcomes) > after_kill + 50, 30, "more calls to complete")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    # Only calls the dead replica had accepted may fail (at most one per worker), and the
    # caller keeps working afterwards.
    assert outcomes.count("unavailable") <= len(workers)
    assert outcomes[-20:] == ["ok"] * 20
