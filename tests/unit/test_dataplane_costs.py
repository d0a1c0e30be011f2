"""What a handle call costs, counted rather than timed, so a regression fails without flaking.

Socket writes per call on each side, and the allocations a call leaves behind: counts that a
loaded machine does not change. A call made alone sends its CALL in one write, and the callee
answers an immediate result with ACCEPTED and RESULT in one write (one wake-up for the caller).
A stream's items travel in batches: the items a generator yields before it next waits cost
one frame, one pickle and at most one wake-up of the caller together.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Iterator

import pytest

import swell.handle
from swell._dataplane import client, wire
from swell._dataplane.client import StreamCall
from swell._dataplane.router import Router
from swell._dataplane.wire import Kind
from swell._replica.user_callable import UserCallable
from swell.handle import DeploymentHandle
from tests.unit.dataplane_fixtures import Replica, router_for, start_replica, stop_replica

CALLS = 50
ITEMS = 32


def run(coro: Awaitable[None], timeout_s: float = 30) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)

    asyncio.run(bounded())


def _caller_sends(router: Router) -> int:
    return sum(connection.sends for connection in router._connections.values())


async def _started() -> tuple[Replica, Router]:
    replica = await start_replica()
    router = router_for({replica.replica_id: replica.address})
    assert await router.call("echo", ("warm",), {}, 30.0) == "warm"  # connected, handshaken
    return replica, router


def test_a_unary_call_costs_one_write_each_way() -> None:
    async def scenario() -> None:
        replica, router = await _started()
        try:
            caller, callee = _caller_sends(router), replica.service.sent.sends
            for i in range(CALLS):
                assert await router.call("echo", (i,), {}, 30.0) == i
            assert _caller_sends(router) - caller == CALLS  # CALL
            assert replica.service.sent.sends - callee == CALLS  # ACCEPTED + RESULT together
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_stream_costs_a_write_per_credit_window_not_per_item() -> None:
    async def scenario() -> None:
        replica, router = await _started()
        try:
            caller, callee = _caller_sends(router), replica.service.sent.sends
            for _ in range(CALLS):
                items = [item async for item in router.stream("tokens", (ITEMS,), {}, 30.0)]
                assert items == list(range(ITEMS))
            # 32 items with a window of 16: STREAM, then the two credits for the second half
            # in one write; the callee writes ACCEPTED and the first 16 items at once, then the
            # last 16 and END. Measured 2 and 2; a little slack for how TCP splits a read.
            assert _caller_sends(router) - caller <= 3 * CALLS
            assert replica.service.sent.sends - callee <= 3 * CALLS
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_stream_costs_a_frame_a_pickle_and_a_wake_up_per_batch_not_per_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    frames = encodes = waits = 0
    on_item, encode_items, wait = StreamCall._on_item, wire.encode_items, StreamCall.wait

    def counting_on_item(self: StreamCall, kind: Kind, payload: bytes) -> None:
        nonlocal frames
        frames += kind is not Kind.END
        on_item(self, kind, payload)

    def counting_encode_items(items: list[object]) -> tuple[bool, bytes]:
        nonlocal encodes
        encodes += 1
        return encode_items(items)

    async def counting_wait(self: StreamCall, *args: object) -> tuple[Kind, bytes]:
        nonlocal waits
        waits += 1  # the consumer found nothing buffered and suspends
        return await wait(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(StreamCall, "_on_item", counting_on_item)
    monkeypatch.setattr(wire, "encode_items", counting_encode_items)
    monkeypatch.setattr(client.StreamCall, "wait", counting_wait)

    async def scenario() -> None:
        replica, router = await _started()
        try:
            for _ in range(CALLS):
                items = [item async for item in router.stream("tokens", (ITEMS,), {}, 30.0)]
                assert items == list(range(ITEMS))
            # The generator yields without waiting: 16 items (a window) in the first batch,
            # the last 16 once credit is back. Measured 2 frames, 2 pickles and 1 wait per
            # stream (32, 32 and 1 before batching); a little slack for how TCP splits a read.
            assert frames <= 3 * CALLS, frames
            assert encodes <= 3 * CALLS, encodes
            assert waits <= 2 * CALLS, waits
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_call_leaves_no_allocations_behind() -> None:
    """Nothing accumulates per call (a leak would grow with every request served)."""

    async def scenario() -> None:
        replica, router = await _started()
        try:
            for i in range(CALLS):  # warm every cache and free list first
                await router.call("echo", (i,), {}, 30.0)
            replica.dispatcher.calls.clear()
            gc.collect()
            tracemalloc.start()
            try:
                before = tracemalloc.take_snapshot()
                for i in range(10 * CALLS):
                    await router.call("echo", (i,), {}, 30.0)
                replica.dispatcher.calls.clear()  # the test dispatcher's own record
                gc.collect()
                after = tracemalloc.take_snapshot()
            finally:
                tracemalloc.stop()
            grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
            # Bytes, for 500 calls: a leak of even one small object per call is over 16 KB.
            assert grown < 16_000, grown
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_handle_method_attributes_are_built_once() -> None:
    handle = DeploymentHandle("Model", "default")
    assert handle.predict is handle.predict
    assert handle.predict.method_name == "predict"
    assert handle.options(timeout_s=5).predict.timeout_s == 5
    # Found as an instance attribute from then on: no miss through __getattr__ per call.
    assert handle.__dict__["predict"] is handle.predict
    assert "remote" not in handle.__dict__


def test_a_handle_looks_its_router_up_once_per_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    lookups = 0

    def counting_router(app_name: str, deployment: str) -> Router:
        nonlocal lookups
        lookups += 1
        loop = asyncio.get_running_loop()
        return swell.handle._routers.setdefault(loop, {})[(app_name, deployment)]

    async def scenario() -> None:
        replica, router = await _started()
        loop = asyncio.get_running_loop()
        swell.handle._routers.setdefault(loop, {})[("default", "Model")] = router
        try:
            handle = DeploymentHandle("Model", "default")
            for i in range(CALLS):
                assert await handle.echo.remote(i) == i
            assert lookups == 1
            # A closed router is forgotten (close_routers() empties the loop's routers).
            replacement = router_for({replica.replica_id: replica.address})
            swell.handle._routers[loop][("default", "Model")] = replacement
            assert await handle.echo.remote("again") == "again"
            assert lookups == 2
            await replacement.close()
        finally:
            swell.handle._routers.pop(loop, None)
            await router.close()
            await stop_replica(replica)

    monkeypatch.setattr(swell.handle, "_router", counting_router)
    monkeypatch.setattr(swell.handle, "_cluster", object())  # calls need a cluster to exist
    run(scenario())


class _Streams:
    async def tokens(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def numbers(self, n: int) -> Iterator[int]:
        yield from range(n)


def test_an_async_generator_method_is_streamed_with_no_layer_around_it() -> None:
    """The replica steps the method's own generator for each item; errors still come from
    the first step, as from any other method, and a sync generator still works."""

    async def scenario() -> None:
        user = UserCallable(_Streams, True, 4)
        await user.construct((), {})
        try:
            stream = user.stream("tokens", (3,), {})
            assert getattr(stream, "ag_code", None) is _Streams.tokens.__code__
            assert [item async for item in stream] == [0, 1, 2]
            assert [item async for item in user.stream("numbers", (3,), {})] == [0, 1, 2]
            for method, args, error in (
                ("missing", (1,), AttributeError),
                ("tokens", (1, 2), TypeError),
            ):
                failing = user.stream(method, args, {})  # nothing raised yet
                with pytest.raises(error):
                    await anext(failing)
        finally:
            await user.shutdown()

    run(scenario())
