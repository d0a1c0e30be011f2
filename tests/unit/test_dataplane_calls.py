"""Handle calls through a real router and real ReplicaServices on 127.0.0.1.

Deadlines (unary, streaming, while no replica takes the call), errors in unpickling on either
side, draining replicas, and at-most-once once a call was accepted.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from swell._dataplane import codec
from swell._dataplane.client import Connection
from swell._dataplane.wire import Kind
from swell.exceptions import (
    RemoteError,
    ReplicaUnavailableError,
    RequestTimeoutError,
    SerializationError,
)
from tests.unit.dataplane_fixtures import (
    TOKEN,
    Unloadable,
    router_for,
    start_replica,
    stop_replica,
)


def run(coro: Awaitable[None], timeout_s: float = 30) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)

    asyncio.run(bounded())


async def eventually(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` on the loop until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_call_past_its_deadline_is_cancelled_in_the_callee() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError, match=r"did not finish within timeout_s=0\.5"):
                await router.call("hang", (), {}, timeout_s=0.5)
            assert 0.45 < time.monotonic() - started < 5
            await eventually(lambda: replica.dispatcher.cancelled == ["hang"], 10, "the cancel")
            await eventually(lambda: replica.service.ongoing == 0, 10, "the call to end")
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_timeout_is_a_timeout_error() -> None:
    assert issubclass(RequestTimeoutError, TimeoutError)


def test_a_stream_times_out_waiting_for_its_next_item() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        items: list[Any] = []
        try:
            with pytest.raises(RequestTimeoutError, match="did not send its next item"):
                async for item in router.stream("stall", (3,), {}, timeout_s=0.5):
                    items.append(item)
            assert items == [0, 1, 2]
            await eventually(lambda: replica.dispatcher.cancelled == ["stall"], 10, "the cancel")
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_slow_consumer_is_not_timed_out() -> None:
    """The limit is on waiting for items, not on the time between reading them."""

    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        items: list[Any] = []
        try:
            # Connected first: on a starved machine, opening the connection alone can take
            # longer than the 0.2 s this test gives each wait for an item.
            assert await router.call("echo", ("warm",), {}, 30.0) == "warm"
            async for item in router.stream("count", (3,), {}, timeout_s=0.2):
                items.append(item)
                await asyncio.sleep(0.3)
            assert items == [0, 1, 2]
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_calls_to_unreachable_replicas_end_at_the_deadline() -> None:
    async def scenario() -> None:
        router = router_for({"Model-0": f"127.0.0.1:{closed_port()}"})
        try:
            started = time.monotonic()
            with pytest.raises(RequestTimeoutError, match=r"no replica .* accepted the call"):
                await router.call("echo", (1,), {}, timeout_s=1.0)
            assert 0.9 < time.monotonic() - started < 5
            with pytest.raises(RequestTimeoutError, match=r"no replica .* accepted the call"):
                async for _ in router.stream("count", (1,), {}, timeout_s=0.5):
                    pass
        finally:
            await router.close()

    run(scenario())


def test_a_call_waiting_for_a_busy_replica_ends_at_the_deadline() -> None:
    async def scenario() -> None:
        replica = await start_replica(max_ongoing=1)
        router = router_for({replica.replica_id: replica.address})
        try:
            held = asyncio.ensure_future(router.call("held", (), {}, timeout_s=10))
            await eventually(lambda: replica.service.ongoing == 1, 10, "the first call to run")
            with pytest.raises(RequestTimeoutError, match="at max_ongoing_requests"):
                await router.call("echo", (1,), {}, timeout_s=0.5)
            assert replica.dispatcher.release is not None
            replica.dispatcher.release.set()
            assert await held == "released"
            assert await router.call("echo", (2,), {}, timeout_s=10) == 2
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_arguments_the_callee_cannot_unpickle_come_back_as_an_error() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        try:
            with pytest.raises(RemoteError) as caught:
                await router.call("echo", (Unloadable(),), {}, timeout_s=10)
            error = caught.value
            assert error.remote_type == "SerializationError"
            assert "could not unpickle the arguments of a handle call" in error.remote_message
            assert "ZeroDivisionError" in error.remote_message
            assert "in the callee's process" in error.remote_message
            assert isinstance(error.cause, SerializationError)
            with pytest.raises(RemoteError, match="could not unpickle the arguments"):
                async for _ in router.stream("count", (Unloadable(),), {}, timeout_s=10):
                    pass
            assert replica.dispatcher.calls == []
            assert replica.service.ongoing == 0
            assert await router.call("echo", ("fine",), {}, timeout_s=10) == "fine"
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_an_answer_the_caller_cannot_unpickle_raises_serialization_error() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        try:
            with pytest.raises(SerializationError) as caught:
                await router.call("unloadable", (), {}, timeout_s=10)
            message = str(caught.value)
            assert "could not unpickle the answer of 'unloadable' from replica Model-1" in message
            assert "ZeroDivisionError" in message
            assert "in the caller's process" in message
            assert isinstance(caught.value.__cause__, ZeroDivisionError)
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_remote_error_whose_class_cannot_be_rebuilt_still_arrives() -> None:
    async def scenario() -> None:
        replica = await start_replica()
        router = router_for({replica.replica_id: replica.address})
        try:
            with pytest.raises(RemoteError) as caught:
                await router.call("raise_unloadable", (), {}, timeout_s=10)
            error = caught.value
            assert (error.remote_type, error.remote_message) == (
                "UnloadableError",
                "the weights are corrupt",
            )
            assert 'raise UnloadableError("the weights are corrupt")' in error.remote_traceback
            assert error.cause is None
            with pytest.raises(RemoteError) as caught:
                await router.call("no_such_method", (), {}, timeout_s=10)
            assert isinstance(caught.value.cause, AttributeError)
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_draining_replica_turns_calls_away_and_finishes_admitted_ones() -> None:
    async def scenario() -> None:
        draining = await start_replica("Model-1")
        other = await start_replica("Model-2")
        only_draining = router_for({draining.replica_id: draining.address})
        both = router_for({draining.replica_id: draining.address, other.replica_id: other.address})
        try:
            held = asyncio.ensure_future(only_draining.call("held", (), {}, timeout_s=30))
            await eventually(lambda: draining.service.ongoing == 1, 10, "the held call to run")
            draining.service.start_draining()
            results = await asyncio.gather(
                *(both.call("echo", (i,), {}, timeout_s=10) for i in range(50))
            )
            assert results == list(range(50))
            assert draining.dispatcher.calls == ["held"]
            assert other.dispatcher.calls == ["echo"] * 50
            # The call admitted before draining began still finishes.
            assert draining.dispatcher.release is not None
            draining.dispatcher.release.set()
            assert await held == "released"
            await asyncio.wait_for(draining.service.wait_idle(10), 10)
        finally:
            await only_draining.close()
            await both.close()
            await stop_replica(draining)
            await stop_replica(other)

    run(scenario())


def test_a_call_accepted_by_a_replica_that_goes_away_is_not_retried() -> None:
    async def scenario() -> None:
        first = await start_replica("Model-1")
        second = await start_replica("Model-2")
        replicas = {first.replica_id: first, second.replica_id: second}
        router = router_for({r.replica_id: r.address for r in replicas.values()})
        try:
            call = asyncio.ensure_future(router.call("hang", (), {}, timeout_s=30))
            await eventually(
                lambda: any(r.dispatcher.calls for r in replicas.values()), 10, "the call to run"
            )
            (running,) = [r for r in replicas.values() if r.dispatcher.calls]
            await stop_replica(running)  # closes its connections: the caller loses the call
            with pytest.raises(ReplicaUnavailableError, match="went away after accepting"):
                await call
            assert [r.dispatcher.calls for r in replicas.values()].count(["hang"]) == 1
            assert sum(len(r.dispatcher.calls) for r in replicas.values()) == 1
        finally:
            await router.close()
            for replica in replicas.values():
                await stop_replica(replica)

    run(scenario())


def test_a_call_cancelled_as_soon_as_it_is_sent_frees_its_slot() -> None:
    """CALL and CANCEL read in one go: the call never starts, and its slot is given back."""

    async def scenario() -> None:
        replica = await start_replica(max_ongoing=1)
        connection = await Connection.open(replica.address, TOKEN, replica.replica_id)
        try:
            first = connection.start(Kind.CALL, codec.dumps(("hang", (), {})))
            first.cancel()  # flushed together with the CALL
            connection.done(first)
            second = connection.start(Kind.CALL, codec.dumps(("echo", ("next",), {})))
            assert await second.accepted is not None, "the cancelled call kept its slot"
            assert codec.decode(await second.result, "echo", replica.replica_id) == "next"
            assert replica.service.ongoing == 0
            assert replica.dispatcher.calls == ["echo"]
        finally:
            await connection.close()
            await stop_replica(replica)

    run(scenario())
