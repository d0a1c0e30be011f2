"""The ingress through swell: HAProxy killed under load, retries, a rolling update's servers."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import swell
import swell.api
from swell._ingress.haproxy_manager import HAProxyManager
from swell._protocol import backend_name
from tests.integration import apps
from tests.integration.conftest import Swell, children_of, haproxy_binaries, wait_until


def ingress() -> HAProxyManager:
    instance = swell.api._instance
    assert instance is not None and instance.ingress is not None
    return instance.ingress


def running_replicas(app: str = "default") -> dict[str, int | None]:
    deployments = swell.status().applications[app].deployments.values()
    return {r.replica_id: r.pid for d in deployments for r in d.replicas if r.state == "RUNNING"}


def every_replica(app: str = "default") -> set[str]:
    """Replica ids in any state (STARTING, RUNNING, STOPPING)."""
    deployments = swell.status().applications[app].deployments.values()
    return {r.replica_id for d in deployments for r in d.replicas}


def haproxy_servers(app: str = "default") -> set[str]:
    instance = swell.api._instance
    assert instance is not None
    manager = ingress()

    async def read(_: object) -> set[str]:
        state = await manager.runtime.servers_state()
        return {n for n in state.get(backend_name(app), {}) if n != "swell_wake"}

    return instance.call(read, 10)


class Load:
    """Sequential requests on fresh connections, 10 ms apart: when each started, and whether
    it succeeded. Bounded by the block it runs in (and 60 s, 3000 requests at most)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.records: list[tuple[float, bool, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="test-load")

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set() and time.monotonic() - started < 60:
            if len(self.records) >= 3000:
                break
            at = time.monotonic()
            try:
                response = httpx.get(self.url, timeout=5)
                ok, who = response.status_code == 200, response.text
            except httpx.HTTPError as error:
                ok, who = False, type(error).__name__
            self.records.append((at, ok, who))
            self._stop.wait(0.01)

    def since(self, moment: float) -> list[tuple[float, bool, str]]:
        return [record for record in self.records if record[0] >= moment]


@contextmanager
def steady_load(url: str) -> Iterator[Load]:
    load = Load(url)
    load._thread.start()
    try:
        wait_until(lambda: sum(ok for _, ok, _ in load.records) >= 20, 30, "the load to start")
        yield load
    finally:
        load._stop.set()
        load._thread.join(30)


@pytest.mark.parametrize("victim", ["worker", "master"])
@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_killed_haproxy_is_back_within_two_seconds(serve: Swell, victim: str) -> None:
    swell.run(apps.whoami_app)
    replicas = running_replicas()
    manager = ingress()
    master = manager.pid
    assert master is not None
    (worker,) = children_of(master)
    with steady_load(serve.url + "/") as load:
        killed_at = time.monotonic()
        os.kill(worker if victim == "worker" else master, signal.SIGKILL)
        # A scale-up right away: its replica joins while, or just after, HAProxy restarts.
        swell.run(apps.WhoAmI.options(num_replicas=3).bind("Hello", punctuation="?"))
        wait_until(lambda: len(load.since(killed_at + 2)) >= 50, 30, "requests after the kill")
    after_two_seconds = load.since(killed_at + 2)
    assert all(ok for _, ok, _ in after_two_seconds), [r for r in after_two_seconds if not r[1]]
    description = manager.describe()
    assert description["status"] == "HEALTHY"
    assert description["restarts"] == 1
    assert description["pid"] not in (None, master)
    # No replica was restarted; the new one serves.
    now = running_replicas()
    assert replicas.items() <= now.items() and len(now) == 3
    wait_until(lambda: haproxy_servers() == set(now), 10, "HAProxy to have all three replicas")
    seen = {serve.client.get("/").json()["replica"] for _ in range(60)}
    assert seen == set(now)


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_only_idempotent_requests_are_sent_again(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.fragile_app)
    # A GET whose replica dies mid-request is sent to the other one.
    get_marker = tmp_path / "get"
    answer = serve.client.get("/", params={"marker": str(get_marker)})
    assert (answer.status_code, answer.json()) == (200, {"attempts": 2})
    assert len(get_marker.read_text().splitlines()) == 2
    wait_until(lambda: len(running_replicas()) == 2, 30, "the killed replica to be replaced")
    # ...and gone from HAProxy: a POST sent on a pooled connection to the dead replica could
    # not be told apart from one the replica got, so HAProxy would fail it without a try.
    wait_until(
        lambda: haproxy_servers() == set(running_replicas()), 30, "HAProxy to drop the dead one"
    )
    # A POST is not: the replica may have acted on it before it died.
    post_marker = tmp_path / "post"
    try:
        status: int | None = serve.client.post(
            "/", params={"marker": str(post_marker)}, content=b"order 1"
        ).status_code
    except httpx.RemoteProtocolError:
        # On a reused server connection HAProxy closes the client's instead of answering 502,
        # as a server would; the client decides.
        status = None
    assert status in (502, None)
    assert len(post_marker.read_text().splitlines()) == 1


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_rolling_updates_leave_no_stale_servers(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    with steady_load(serve.url + "/") as load:
        for version in ("v2", "v3"):
            old = set(running_replicas())
            swell.run(apps.Versioned.bind(version))
            # Gone from the status (not merely out of RUNNING: a draining replica is STOPPING
            # and still in HAProxy until its requests end).
            wait_until(lambda old=old: not (every_replica() & old), 60, "old replicas to go")
    assert all(ok for _, ok, _ in load.records)
    # Every old server left HAProxy as its replica stopped; none waits for a reconcile.
    assert haproxy_servers() == set(running_replicas())
