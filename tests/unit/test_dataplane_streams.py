"""Streams over the data plane: items travel in batches, and batching changes nothing a caller
can see (order, the values as they were when yielded, errors after the items before them,
backpressure within the credit window). Real sockets on 127.0.0.1, one process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from swell._dataplane.router import Router
from swell._dataplane.wire import STREAM_WINDOW, FrameWriter
from swell.exceptions import RemoteError, ReplicaUnavailableError, SerializationError
from tests.unit.dataplane_fixtures import Replica, router_for, start_replica, stop_replica


def run(coro: Awaitable[None], timeout_s: float = 30) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)

    asyncio.run(bounded())


async def _started() -> tuple[Replica, Router]:
    replica = await start_replica()
    return replica, router_for({replica.replica_id: replica.address})


async def _until(condition: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    """Wait (polling the loop) for ``condition``; fail naming ``what`` past the deadline."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout_s}s: {what}")
        await asyncio.sleep(0.001)


def test_each_item_is_what_it_was_when_yielded() -> None:
    """A generator that changes a list it already yielded: the caller sees every state."""

    async def scenario() -> None:
        replica, router = await _started()
        try:
            items = [item async for item in router.stream("mutated", (5,), {}, 30.0)]
            assert items == [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 2, 3, 4]]
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_scalars_and_other_items_mixed_in_a_batch_arrive_in_order() -> None:
    sent = [1, "two", {"three": [3]}, None, b"five", 6.5, True, ("eight",), [9], 2**70]

    async def scenario() -> None:
        replica, router = await _started()
        try:
            received = [item async for item in router.stream("items", (sent,), {}, 30.0)]
            assert received == sent
            assert [type(item) for item in received] == [type(item) for item in sent]
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


@pytest.mark.parametrize("method", ["unloadable_last", "unloadable_alone"])
def test_items_before_one_the_caller_cannot_unpickle_still_arrive_in_order(method: str) -> None:
    """In a batch with others (ITEMS) or alone (ITEM): the items before it, then the error."""

    async def scenario() -> None:
        replica, router = await _started()
        received: list[object] = []
        try:
            try:
                async for item in router.stream(method, (5,), {}, 30.0):
                    received.append(item)
            except SerializationError as error:
                assert method in str(error)
            else:
                raise AssertionError("the item that cannot be unpickled raised nothing")
            assert received == [0, 1, 2, 3, 4]
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_an_item_the_callee_cannot_pickle_ends_the_stream_after_the_items_before_it() -> None:
    async def scenario() -> None:
        replica, router = await _started()
        received: list[object] = []
        try:
            try:
                async for item in router.stream("unpicklable_last", (3,), {}, 30.0):
                    received.append(item)
            except RemoteError as error:
                assert "lock" in str(error).lower()
            else:
                raise AssertionError("the item that cannot be pickled raised nothing")
            assert received == [0, 1, 2]
            assert replica.service.ongoing == 0
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_large_items_go_out_as_they_are_yielded_and_arrive_whole() -> None:
    """Items past FrameWriter.HOLD_BYTES are not held for the rest of the batch."""

    async def scenario() -> None:
        replica, router = await _started()
        size = FrameWriter.HOLD_BYTES + 1000
        try:
            sends = replica.service.sent.sends
            items = [item async for item in router.stream("blobs", (6, size), {}, 30.0)]
            assert items == [bytes([i]) * size for i in range(6)]
            # One send per item at least (the batch is flushed as each one passes the mark).
            assert replica.service.sent.sends - sends >= 6
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_slow_consumer_holds_the_callee_within_the_credit_window() -> None:
    """Batching does not widen the window: the generator is held once STREAM_WINDOW items
    are ahead of what the consumer has taken, and goes on as the consumer takes more."""

    async def scenario() -> None:
        replica, router = await _started()
        dispatcher = replica.dispatcher
        total = 10 * STREAM_WINDOW
        stream = router.stream("count", (total,), {}, 30.0)
        try:
            taken = [await anext(stream)]

            def held() -> bool:
                # The generator has yielded one item past the window and waits for credit.
                return any(
                    credit._available == 0
                    for connection in replica.service._open
                    for credit in connection._credits.values()
                )

            await _until(held, "the callee waiting for credit")
            assert dispatcher.produced == STREAM_WINDOW + 1
            # Credit returns half a window at a time, as the consumer asks for more.
            for _ in range(STREAM_WINDOW // 2):
                taken.append(await anext(stream))
            await _until(
                lambda: dispatcher.produced == STREAM_WINDOW // 2 + STREAM_WINDOW + 1 and held(),
                "the callee held again, half a window further on",
            )
            taken += [item async for item in stream]
            assert taken == list(range(total))
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_replica_that_goes_away_mid_stream_ends_it_after_the_items_it_sent() -> None:
    async def scenario() -> None:
        replica, router = await _started()
        stream = router.stream("stall", (3,), {}, 30.0)
        received: list[object] = []
        try:
            received += [await anext(stream) for _ in range(3)]
            await stop_replica(replica)  # closes its connections with the call running
            try:
                received.append(await anext(stream))
            except ReplicaUnavailableError as error:
                assert "went away during the stream" in str(error)
            else:
                raise AssertionError("a stream from a replica that went away did not fail")
            assert received == [0, 1, 2]
            # Its generator was cancelled.
            await _until(lambda: replica.dispatcher.cancelled == ["stall"], "the stall cancelled")
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            await router.close()

    run(scenario())
