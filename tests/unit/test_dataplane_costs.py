"""What a handle call costs, counted rather than timed, so a regression fails without flaking.

Socket writes per call on each side, and the allocations a call leaves behind: counts that a
loaded machine does not change. A call made alone sends its CALL in one write, and the callee
answers an immediate result with ACCEPTED and RESULT in one write (one wake-up for the caller).
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import Awaitable

import pytest

import swell.handle
from swell._dataplane.router import Router
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
