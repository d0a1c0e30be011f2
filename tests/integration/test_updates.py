"""Redeploying a running app: in place where possible, rolling where needed, never dropping."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

import swell
from tests.integration import apps
from tests.integration.conftest import Swell, wait_until


def replica_ids(deployment: str = "Versioned") -> set[str]:
    dep = swell.status().applications["default"].deployments[deployment]
    return {r.replica_id for r in dep.replicas}


@contextmanager
def steady_load(url: str) -> Iterator[dict[str, int]]:
    """Requests back to back from two clients until the block ends; counts the outcomes."""
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    ok = http.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                counts["ok" if ok else "failed"] += 1

    threads = [threading.Thread(target=client) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: counts["ok"] > 20, 30, "the load to start")
        yield counts
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)


def test_redeploying_the_same_app_restarts_nothing(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    before = replica_ids()
    swell.run(apps.Versioned.bind("v1"))
    assert replica_ids() == before


def test_scaling_up_and_down_in_place(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    before = replica_ids()
    swell.run(apps.Versioned.options(num_replicas=3).bind("v1"))
    grown = replica_ids()
    assert len(grown) == 3 and before < grown
    swell.run(apps.Versioned.options(num_replicas=1).bind("v1"))
    wait_until(lambda: len(replica_ids()) == 1, 30, "the scale-down")
    assert replica_ids() < grown


def test_user_config_reaches_live_replicas(serve: Swell) -> None:
    swell.run(apps.Versioned.options(user_config={"threshold": 1}).bind("v1"))
    before = replica_ids()
    swell.run(apps.Versioned.options(user_config={"threshold": 2}).bind("v1"))

    def all_reconfigured() -> bool:
        answers = [serve.client.get("/").json() for _ in range(20)]
        return all(a["config"] == {"threshold": 2} for a in answers)

    wait_until(all_reconfigured, 30, "every replica to see the new user_config")
    assert replica_ids() == before
    # The model built at startup was frozen with the rest; reconfigure() dropped it, and the
    # replica thawed and collected it (a frozen cycle is never freed).
    assert all(serve.client.get("/").json()["replaced_model_freed"] for _ in range(10))


def test_rolling_update_under_load_drops_nothing(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    old = replica_ids()
    with steady_load(serve.url + "/") as counts:
        swell.run(apps.Versioned.bind("v2"))
        wait_until(lambda: not (replica_ids() & old), 60, "the old replicas to be gone")
        served_before = counts["ok"]
        wait_until(lambda: counts["ok"] > served_before + 20, 30, "requests after the update")
    assert counts["failed"] == 0, counts
    assert {serve.client.get("/").json()["version"] for _ in range(10)} == {"v2"}


def test_long_stream_survives_a_rolling_update(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    old = replica_ids()
    lines: list[str] = []
    with serve.client.stream("GET", "/stream", params={"seconds": 30}) as response:
        lines_iter = response.iter_lines()
        lines.append(next(lines_iter))
        swell.run(apps.Versioned.bind("v2"))
        lines.extend(lines_iter)
    assert lines[-1] == "end"
    assert set(lines[:-1]) == {"v1"} and len(lines) > 50
    wait_until(lambda: not (replica_ids() & old), 60, "the drained replica to stop")


def test_a_broken_update_keeps_the_old_version_serving(serve: Swell) -> None:
    swell.run(apps.Versioned.bind("v1"))
    with pytest.raises(swell.DeploymentFailedError, match="cannot load its model"):
        swell.run(apps.Versioned.bind("v2", broken=True))
    app = swell.status().applications["default"]
    assert app.status == "DEPLOY_FAILED"
    assert "previous version keeps serving" in app.deployments["Versioned"].message
    assert {serve.client.get("/").json()["version"] for _ in range(10)} == {"v1"}
