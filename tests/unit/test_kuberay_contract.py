"""The admin API's KubeRay contract, without processes: status names, query, body fields, and
the environment variables swell reads for Ray compatibility (tests/kubernetes plays the whole
operator against a real instance)."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.testclient import TestClient

from swell._controller.admin_api import build_admin_app
from swell._controller.deployer import ConfigDeployer
from swell._controller.deployment_state import FAILED_AFTER_ATTEMPTS, DeploymentState
from swell._controller.status_view import applications_document
from swell._ray_env import note_ignored_switches, ray_auth_token
from swell.config import DeploymentConfig, ServeConfig, validate_model
from swell.exceptions import ConfigError

# The statuses KubeRay's RayService controller knows (ray.io/v1 ApplicationStatusEnum and
# DeploymentStatusEnum).
APP_STATUSES = {"NOT_STARTED", "DEPLOYING", "DEPLOY_FAILED", "RUNNING", "UNHEALTHY", "DELETING"}
DEPLOYMENT_STATUSES = {"UPDATING", "HEALTHY", "UNHEALTHY"}


def app_with(state: DeploymentState) -> Any:
    deployment = SimpleNamespace(
        state=state, target=SimpleNamespace(config=DeploymentConfig()), replica_set={}
    )
    return SimpleNamespace(
        name="app", route_prefix="/", deployed_at=0.0, deleting=False, deployments={"D": deployment}
    )


def shown(state: DeploymentState) -> tuple[str, str]:
    document = applications_document([app_with(state)])["app"]
    return document["status"], document["deployments"]["D"]["status"]


def test_deployment_statuses_are_the_ones_kuberay_knows() -> None:
    starting = DeploymentState("D", target=1, health_check_period_s=10)
    assert shown(starting) == ("DEPLOYING", "UPDATING")

    failed = DeploymentState("D", target=1, health_check_period_s=10)
    for attempt in range(FAILED_AFTER_ATTEMPTS):
        failed.on_started(f"r{attempt}", now=float(attempt))
        failed.on_start_failed(f"r{attempt}", "ImportError: nope", now=float(attempt))
    app_status, deployment_status = shown(failed)
    assert (app_status, deployment_status) == ("DEPLOY_FAILED", "UNHEALTHY")
    message = applications_document([app_with(failed)])["app"]["deployments"]["D"]["message"]
    assert "ImportError: nope" in message

    healthy = DeploymentState("D", target=1, health_check_period_s=10)
    healthy.on_started("r", now=0.0)
    healthy.on_ready("r", "127.0.0.1:1", pid=1, now=1.0)
    assert shown(healthy) == ("RUNNING", "HEALTHY")
    assert {shown(s)[0] for s in (starting, failed, healthy)} <= APP_STATUSES
    assert {shown(s)[1] for s in (starting, failed, healthy)} <= DEPLOYMENT_STATUSES


class _Backend:
    def __init__(self) -> None:
        self.submitted: list[Any] = []

    def status_document(self) -> dict[str, Any]:
        return {"applications": {}}

    def submit_config(self, document: Any) -> None:
        self.submitted.append(validate_model(ServeConfig, document, "config"))


@pytest.fixture
def client() -> TestClient:
    app = build_admin_app(_Backend(), "t0ken", "cluster", hosts=None)  # type: ignore[arg-type]
    return TestClient(app, headers={"x-ray-authorization": "Bearer t0ken"})


def test_the_operators_get_and_its_query(client: TestClient) -> None:
    answer = client.get("/api/serve/applications/", params={"api_type": "declarative"})
    assert answer.status_code == 200 and answer.json() == {"applications": {}}
    wrong = client.get("/api/serve/applications/", params={"api_type": "both"})
    assert wrong.status_code == 400 and "declarative" in wrong.json()["error"]


def test_target_capacity_is_accepted_within_bounds(client: TestClient) -> None:
    body = {"applications": [], "target_capacity": 50}
    assert client.put("/api/serve/applications/", json=body).status_code == 200
    too_much = client.put("/api/serve/applications/", json={"target_capacity": 101})
    assert too_much.status_code == 400 and "target_capacity" in too_much.json()["error"]
    assert ServeConfig(target_capacity=None).target_capacity is None


def test_ray_auth_token_is_read_only_in_token_mode() -> None:
    assert ray_auth_token({}) is None
    assert ray_auth_token({"RAY_AUTH_TOKEN": "abc"}) is None  # mode off: not ours to use
    assert ray_auth_token({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": " abc\n"}) == "abc"
    assert ray_auth_token({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "abc"}) is None
    with pytest.raises(ConfigError, match="RAY_AUTH_TOKEN is empty or unset"):
        ray_auth_token({"RAY_AUTH_MODE": "token"})


def test_ray_serve_switches_are_accepted_and_noted(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "0"}
    with caplog.at_level(logging.INFO, logger="swell"):
        present = note_ignored_switches(environ)
    assert present == ["RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED"]
    assert "accepted and ignored" in caplog.text
    assert note_ignored_switches({}) == []


def _deployer() -> tuple[Any, list[Any]]:
    spawned: list[Any] = []

    def spawn(coroutine: Any, name: str) -> None:
        coroutine.close()  # not run: the test looks at what is shown meanwhile
        spawned.append(name)

    return ConfigDeployer(SimpleNamespace(), Path("/nonexistent"), spawn), spawned  # type: ignore[arg-type]


def test_a_config_waiting_its_turn_shows_its_new_apps_not_started() -> None:
    deployer, spawned = _deployer()
    config = ServeConfig(applications=[{"name": "new", "import_path": "m:app"}], target_capacity=50)
    deployer.submit(config)
    assert spawned == ["swell-deploy-1"]
    applications: dict[str, Any] = {"old": {"name": "old", "deployments": {}}}
    deployer.overlay(applications)
    assert applications["new"]["status"] == "NOT_STARTED"
    assert deployer.target_capacity() == 50

    deployer.pending.started = True  # its turn came: importing
    deployer.overlay(applications)
    assert applications["new"]["status"] == "DEPLOYING"

    deployer.submit(config)  # KubeRay's re-PUT of the same config: nothing new is started
    assert spawned == ["swell-deploy-1"]
    deployer.pending.error = "ImportError: m"
    deployer.overlay(applications)
    assert applications["new"]["status"] == "DEPLOY_FAILED"
    assert "ImportError: m" in applications["new"]["message"]
