"""Autoscaling through the real HAProxy: up under load, back down, and from zero."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx

import swell
from tests.integration import apps
from tests.integration.conftest import Swell, wait_until


def running(app: str, deployment: str) -> int:
    dep = swell.status().applications[app].deployments[deployment]
    return dep.replica_states.get("RUNNING", 0)


def target(app: str, deployment: str) -> int:
    return swell.status().applications[app].deployments[deployment].target_replicas


def test_scales_up_under_load_and_back_down(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.elastic_app)
    assert running("default", "Elastic") == 1
    gate = tmp_path / "gate"
    results: list[int] = []

    def call() -> None:
        with httpx.Client(timeout=60) as client:
            results.append(client.get(serve.url, params={"gate": str(gate)}).status_code)

    callers = [threading.Thread(target=call) for _ in range(6)]
    for caller in callers:
        caller.start()
    # Six requests held open against target_ongoing_requests=1: the most it may run is 3.
    wait_until(lambda: running("default", "Elastic") == 3, 60, "three replicas")
    gate.touch()
    for caller in callers:
        caller.join(60)
    assert results == [200] * 6
    wait_until(lambda: running("default", "Elastic") == 1, 60, "the scale back down to one")
    assert target("default", "Elastic") == 1


def test_http_scale_from_zero(serve: Swell) -> None:
    swell.run(apps.cold_app)
    app = swell.status().applications["default"]
    assert app.status == "RUNNING"
    assert app.deployments["Elastic"].replicas == []
    # No replica yet: the request waits while one starts, instead of failing.
    answer = serve.client.get("/")
    assert answer.status_code == 200
    assert answer.json()["replica"].startswith("Elastic-")
    assert running("default", "Elastic") == 1
    wait_until(
        lambda: swell.status().applications["default"].deployments["Elastic"].replicas == [],
        60,
        "the scale back to zero",
    )


def test_handle_call_scales_a_deployment_from_zero(serve: Swell) -> None:
    swell.run(apps.cold_model_app)
    assert running("default", "Model") == 0
    assert serve.client.post("/", json={"x": [1, 2]}).json()["y"] == 4.0
    assert running("default", "Model") == 1
