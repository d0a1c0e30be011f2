"""What a replica's HTTP request costs, counted rather than timed: the disconnect watch arms one
timer per event loop, not one per request, and swell reads the headers in one pass."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from swell._metrics.process import PROCESS
from swell._replica.server import ReplicaASGI
from swell._replica.slow_requests import SlowRequests
from swell._replica.user_callable import UserCallable

REQUESTS = 500


def test_fast_requests_share_one_timer() -> None:
    async def scenario() -> None:
        slow = SlowRequests(after_s=3600.0)
        started: list[int] = []
        for i in range(REQUESTS):
            slow.note(i, 0.0, lambda i=i: started.append(i))
            slow.done(i)
        assert slow.timers_armed == 1
        assert not slow._running
        assert not started

    asyncio.run(scenario())


def test_a_request_still_running_gets_its_watcher_once() -> None:
    async def scenario() -> None:
        slow = SlowRequests(after_s=0.001)
        watched = asyncio.Event()
        calls: list[str] = []

        def start(name: str) -> None:
            calls.append(name)
            watched.set()

        slow.note("slow", time.perf_counter(), lambda: start("slow"))
        slow.note("fast", time.perf_counter(), lambda: start("fast"))
        slow.done("fast")
        async with asyncio.timeout(10):
            await watched.wait()
            while slow._timer is not None:  # nothing left to watch: the timer is not re-armed
                await asyncio.sleep(0.001)
        assert calls == ["slow"]
        assert not slow._running

    asyncio.run(scenario())


class _Hello:
    async def __call__(self) -> str:
        return "hi"


def test_a_replica_arms_no_timer_and_reads_headers_once_per_request() -> None:
    # The requests below count in this process's metrics: put them back afterwards, or a
    # later test scraping this process (the controller's families) would count them.
    saved = {key: list(row) for key, row in PROCESS.http.items()}
    try:
        _count_timers_and_header_passes()
    finally:
        PROCESS.http.clear()
        PROCESS.http.update(saved)


def _count_timers_and_header_passes() -> None:
    async def scenario() -> None:
        user = UserCallable(_Hello, True, 10)
        await user.construct((), {})
        app = ReplicaASGI(user, None, None, "token")
        app.slow = SlowRequests(after_s=3600.0)  # none gets slow, however loaded the machine
        loop = asyncio.get_running_loop()
        timers = 0
        call_later = loop.call_later

        def counting_call_later(*args: Any, **kwargs: Any) -> asyncio.TimerHandle:
            nonlocal timers
            timers += 1
            return call_later(*args, **kwargs)

        loop.call_later = counting_call_later  # type: ignore[method-assign]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        passes = 0

        class Headers(list[tuple[bytes, bytes]]):
            def __iter__(self) -> Any:
                nonlocal passes
                passes += 1
                return super().__iter__()

        for _ in range(REQUESTS):
            headers = Headers([(b"host", b"x"), (b"x-request-id", b"abc")])
            scope = {"type": "http", "method": "GET", "path": "/", "headers": headers}
            scope |= {"server": ("127.0.0.1", 2), "query_string": b"", "root_path": ""}
            await app(scope, receive, send)
        assert len(sent) == 2 * REQUESTS and sent[-1]["body"] == b"hi"
        assert timers == app.slow.timers_armed == 1  # one for all the requests
        assert passes == REQUESTS  # request id, route prefix, model id: one pass for all
        assert not app.slow._running

    asyncio.run(scenario())
