"""Steady loopback load for the chaos suite: a mix of unary, streamed and composed requests.

Runs on its own thread and event loop while the caller injects faults; every request is
checked end to end (status and full body), and every failure is recorded with its time and
reason. Bounded: it stops when told, or at its deadline, whichever comes first.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

# Per kind: (method, path, idempotent, streamed).
KINDS: dict[str, tuple[str, str, bool, bool]] = {
    "get": ("GET", "/unary", True, False),
    "post": ("POST", "/post", False, False),
    "compose": ("GET", "/compose", True, False),
    "stream": ("GET", "/stream", True, True),
    "compose_stream": ("GET", "/compose_stream", True, True),
}


@dataclass
class KindReport:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    failure_times: list[float] = field(default_factory=list)


@dataclass
class LoadPlan:
    base_url: str
    # Requests per second per unary kind; streams run back to back on ``stream_workers``.
    rate_per_kind: float = 40.0
    kinds: tuple[str, ...] = tuple(KINDS)
    stream_chunks: int = 10
    stream_gap_s: float = 0.05
    stream_workers: int = 2
    deadline_s: float = 300.0
    request_timeout_s: float = 120.0


class Load:
    """Start it, inject faults, stop it, read the report."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.reports = {kind: KindReport() for kind in plan.kinds}
        self.started_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="chaos-load", daemon=True)

    def start(self) -> Load:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def stop(self) -> dict[str, KindReport]:
        self._stop.set()
        self._thread.join(self.plan.request_timeout_s + 30)
        assert not self._thread.is_alive(), "the load generator did not stop"
        return self.reports

    def ok(self, kind: str) -> int:
        return self.reports[kind].ok

    def total_ok(self) -> int:
        return sum(report.ok for report in self.reports.values())

    def _main(self) -> None:
        asyncio.run(self._run())

    async def _run(self) -> None:
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
        async with httpx.AsyncClient(
            base_url=self.plan.base_url, timeout=self.plan.request_timeout_s, limits=limits
        ) as client:
            workers = []
            for kind in self.plan.kinds:
                streamed = KINDS[kind][3]
                count = self.plan.stream_workers if streamed else 4
                workers += [self._worker(client, kind, count) for _ in range(count)]
            await asyncio.gather(*workers)

    def _done(self) -> bool:
        return self._stop.is_set() or time.monotonic() - self.started_at > self.plan.deadline_s

    async def _worker(self, client: httpx.AsyncClient, kind: str, workers: int) -> None:
        method, path, _, streamed = KINDS[kind]
        interval = 0.0 if streamed else workers / self.plan.rate_per_kind
        next_at = time.monotonic()
        while not self._done():
            report = self.reports[kind]
            report.sent += 1
            try:
                reason = await self._one(client, method, path, streamed)
            except (httpx.HTTPError, OSError) as error:
                reason = type(error).__name__
            if reason is None:
                report.ok += 1
            else:
                report.failed += 1
                report.reasons[reason] += 1
                report.failure_times.append(time.monotonic() - self.started_at)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                next_at = time.monotonic()

    async def _one(
        self, client: httpx.AsyncClient, method: str, path: str, streamed: bool
    ) -> str | None:
        """None if the request succeeded completely, else why not."""
        if not streamed:
            body = b"x" * 100 if method == "POST" else None
            response = await client.request(method, path, params={"x": "1"}, content=body)
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            return None
        params = {"n": str(self.plan.stream_chunks), "gap": str(self.plan.stream_gap_s)}
        async with client.stream(method, path, params=params) as response:
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            text = (await response.aread()).decode()
        expected = "".join(f"{i}\n" for i in range(self.plan.stream_chunks))
        return None if text == expected else "incomplete stream"


def summary(reports: dict[str, KindReport]) -> str:
    """One line per kind: sent, ok, failed, and why."""
    lines = []
    for kind, report in reports.items():
        reasons = ", ".join(f"{why} x{n}" for why, n in report.reasons.most_common(3))
        lines.append(
            f"{kind}: sent {report.sent}, ok {report.ok}, failed {report.failed}"
            + (f" ({reasons})" if reasons else "")
        )
    return "\n".join(lines)
