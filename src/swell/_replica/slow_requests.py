"""Which HTTP requests have run long enough to need a disconnect watcher.

A timer per request (``call_later`` plus ``cancel``) cost about 1.3 us and a TimerHandle on
every request, although almost all of them finish long before a client could leave. Instead
requests are noted in start order, and one timer per event loop, armed only while some
request is running, gives a watcher to those still running after ``after_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class SlowRequests:
    """Calls each noted request's ``start`` once it has run ``after_s`` (unless it ended)."""

    __slots__ = ("_after_s", "_running", "_timer", "timers_armed")

    def __init__(self, after_s: float) -> None:
        self._after_s = after_s
        # key -> (started, start): insertion order is start order, so the oldest come first.
        self._running: dict[object, tuple[float, Callable[[], None]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.timers_armed = 0  # held by the regression tests: timers, not requests

    def note(self, key: object, started: float, start: Callable[[], None]) -> None:
        """``started`` is ``time.perf_counter()`` at the request's start."""
        self._running[key] = (started, start)
        if self._timer is None:
            self._arm(self._after_s)

    def done(self, key: object) -> None:
        self._running.pop(key, None)

    def _arm(self, delay_s: float) -> None:
        self.timers_armed += 1
        self._timer = asyncio.get_running_loop().call_later(delay_s, self._sweep)

    def _sweep(self) -> None:
        self._timer = None
        running = self._running
        now = time.perf_counter()
        while running:
            key = next(iter(running))
            started, start = running[key]
            wait_s = started + self._after_s - now
            if wait_s > 0:
                self._arm(wait_s)  # the oldest still running is not slow yet
                return
            del running[key]
            start()
