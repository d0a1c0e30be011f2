"""Running as a service: swell start / deploy / status / config / shutdown, the admin API."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import swell
from swell._private_files import find_admin_token
from tests.integration import apps
from tests.integration.conftest import children_of, free_port, pid_alive, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def swell_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        children = children_of(frontier.pop())
        found += children
        frontier += children
    return found


class Service:
    def __init__(self, port: int, admin_port: int, log: Path) -> None:
        self.port = port
        self.admin_port = admin_port
        self.address = f"http://127.0.0.1:{admin_port}"
        self.log = log

    def admin(self) -> httpx.Client:
        """A client carrying the token `swell start` left for this user, as the CLI does."""
        token = find_admin_token(self.admin_port)
        assert token, "swell start left no admin token for this user"
        return httpx.Client(
            base_url=self.address, headers={"authorization": f"Bearer {token}"}, timeout=30
        )

    def status(self) -> dict[str, Any]:
        with self.admin() as client:
            document: dict[str, Any] = client.get("/api/serve/applications/").json()
            return document


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    port, admin_port = free_port(), free_port()
    log = tmp_path / "swell.log"
    started = swell_cli(
        "start", "--port", str(port), "--admin-port", str(admin_port), "--log-file", str(log)
    )
    assert started.returncode == 0, started.stderr
    service = Service(port, admin_port, log)
    pid = service.status()["controller_info"]["pid"]
    try:
        yield service
    finally:
        if pid_alive(pid):
            stop_or_kill([pid, *descendants(pid)], service.address)


def stop_or_kill(pids: list[int], address: str) -> None:
    """`swell shutdown`; whatever is still alive after the deadline is killed by PID (these
    are processes the test started), and the test fails for it."""
    swell_cli("shutdown", "--address", address)
    try:
        wait_until(lambda: not any(pid_alive(p) for p in pids), 30, "swell to stop")
    finally:
        for leftover in [p for p in pids if pid_alive(p)]:
            os.kill(leftover, signal.SIGKILL)


def write_config(path: Path, port: int, replicas: int = 2) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "http_options": {"port": port},
                "applications": [
                    {
                        "name": "hello",
                        "route_prefix": "/",
                        "import_path": "examples.hello:app",
                        "deployments": [{"name": "Hello", "num_replicas": replicas}],
                    }
                ],
            }
        )
    )
    return path


def replica_ids(service: Service) -> set[str]:
    status = service.status()
    return {
        r["replica_id"] for r in status["applications"]["hello"]["deployments"]["Hello"]["replicas"]
    }


def test_start_deploy_status_config_shutdown(service: Service, tmp_path: Path) -> None:
    config = write_config(tmp_path / "serve.yaml", service.port)
    began = time.monotonic()
    deployed = swell_cli("deploy", str(config), "--address", service.address)
    assert deployed.returncode == 0, deployed.stderr
    assert "hello: RUNNING" in deployed.stdout
    answer = httpx.get(f"http://127.0.0.1:{service.port}/?name=Ada")
    print(f"swell deploy to first 200: {time.monotonic() - began:.2f}s")
    assert answer.json() == {"message": "Hello, Ada"}

    status = swell_cli("status", "--address", service.address)
    assert "deployment Hello: HEALTHY (target 2; RUNNING=2)" in status.stdout
    in_force = yaml.safe_load(swell_cli("config", "--address", service.address).stdout)
    assert in_force["applications"][0]["deployments"] == [{"name": "Hello", "num_replicas": 2}]

    # Deploying the same config again changes nothing.
    before = replica_ids(service)
    assert swell_cli("deploy", str(config), "--address", service.address).returncode == 0
    assert replica_ids(service) == before

    pid = service.status()["controller_info"]["pid"]
    started_pids = [pid, *descendants(pid)]
    stopped = swell_cli("shutdown", "--address", service.address)
    assert stopped.returncode == 0, stopped.stderr
    wait_until(lambda: not any(pid_alive(p) for p in started_pids), 30, "every process to exit")


def test_bad_config_over_the_api_leaves_apps_untouched(service: Service, tmp_path: Path) -> None:
    config = write_config(tmp_path / "serve.yaml", service.port)
    assert swell_cli("deploy", str(config), "--address", service.address).returncode == 0
    before = replica_ids(service)
    admin = service.admin()
    url = "/api/serve/applications/"
    # Schema errors are refused at once, with the field named.
    cases = [
        ({"applications": [{"import_path": "examples.hello:app", "oops": 1}]}, "oops"),
        ({"http_options": {"port": 1}, "applications": []}, "http_options.port=1 differs"),
        (
            {
                "applications": [
                    {
                        "name": "hello",
                        "import_path": "examples.hello:app",
                        "deployments": [{"name": "Hello", "max_ongoing_requests": 0}],
                    }
                ]
            },
            "max_ongoing_requests=0",
        ),
    ]
    for document, expected in cases:
        response = admin.put(url, json=document)
        assert response.status_code == 400, document
        assert expected in response.json()["error"]
    assert replica_ids(service) == before
    # An import error is found in the background, shown as DEPLOY_FAILED with the reason;
    # the running app keeps serving untouched.
    started = time.monotonic()
    broken = {"applications": [{"name": "hello", "import_path": "examples.hello:nope"}]}
    assert admin.put(url, json=broken).status_code == 200
    assert time.monotonic() - started < 2.0  # answered before the import (KubeRay's timeout)

    def failed() -> bool:
        app = service.status()["applications"]["hello"]
        return bool(app["status"] == "DEPLOY_FAILED" and "no attribute 'nope'" in app["message"])

    wait_until(failed, 60, "the broken config to show as DEPLOY_FAILED")
    assert replica_ids(service) == before
    assert httpx.get(f"http://127.0.0.1:{service.port}/").status_code == 200
    # The CLI says the same, before it contacts the controller when it can.
    bad = tmp_path / "bad.yaml"
    bad.write_text("applications: [{import_path: 'examples.hello:app', route_prefix: 'x'}]\n")
    result = swell_cli("deploy", str(bad), "--address", service.address)
    assert result.returncode == 1
    assert "route_prefix='x': must start with '/'" in result.stderr
    admin.close()


def test_the_newest_config_wins_and_prints_at_import_are_harmless(
    service: Service, tmp_path: Path
) -> None:
    admin = service.admin()
    url = "/api/serve/applications/"
    slow = {"applications": [{"name": "slow", "import_path": "tests.integration.slow_import:app"}]}
    noisy = {
        "applications": [{"name": "noisy", "import_path": "tests.integration.noisy_import:app"}]
    }
    assert admin.put(url, json=slow).status_code == 200
    assert admin.put(url, json=noisy).status_code == 200  # arrives while the first imports

    def noisy_running() -> bool:
        return bool(service.status()["applications"].get("noisy", {}).get("status") == "RUNNING")

    wait_until(noisy_running, 60, "the newer config to run")
    # The older config never lands on top of it, not even once its slow import would be done.
    time_to_import_slow = 4.0
    deadline = time.monotonic() + time_to_import_slow
    while time.monotonic() < deadline:
        assert set(service.status()["applications"]) == {"noisy"}
        time.sleep(0.2)
    admin.close()


def test_admin_token_is_enforced_on_loopback_and_handles_still_work() -> None:
    port = free_port()
    swell.start(http_options={"port": port}, admin_port=0, admin_token="s3cret")
    try:
        swell.run(apps.composed_app)
        address = f"http://127.0.0.1:{swell.status().raw['admin_port']}"
        url = f"{address}/api/serve/applications/"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer s3cret"}).status_code == 200
        # What a KubeRay operator with token authentication sends.
        ray_header = {"x-ray-authorization": "Bearer s3cret"}
        assert httpx.get(url, headers=ray_header).status_code == 200
        # Nothing changes state without the token: not a PUT, not a shutdown, not a simple
        # cross-site form post.
        assert httpx.put(url, json={"applications": []}).status_code == 401
        assert httpx.delete(url).status_code == 401
        assert httpx.post(f"{address}/api/swell/shutdown").status_code == 401
        form = {"content-type": "application/x-www-form-urlencoded"}
        assert httpx.post(f"{address}/api/swell/shutdown", headers=form).status_code == 401
        # DNS rebinding: a page served from another name reaches 127.0.0.1 with its own Host.
        rebound = {"host": "attacker.example:80", "authorization": "Bearer s3cret"}
        assert httpx.get(url, headers=rebound).status_code == 403
        assert httpx.get(f"{address}/-/healthz").status_code == 200
        assert swell.status().applications["default"].status == "RUNNING"
        # Routers in the replicas watch replica sets with the cluster token instead.
        answer = httpx.post(f"http://127.0.0.1:{port}/", json={"x": [1, 2]})
        assert answer.json()["y"] == 4.0
    finally:
        swell.shutdown()


def test_the_generated_token_is_private_and_never_in_argv_or_environment(
    service: Service,
) -> None:
    token = find_admin_token(service.admin_port)
    assert token is not None and len(token) >= 32
    files = list(Path("/").glob("tmp/swell-*/admin-*.token")) + list(
        Path("/run/user").glob("*/swell/admin-*.token")
    )
    mine = [f for f in files if f.name == f"admin-{service.admin_port}.token"]
    assert mine, files
    for path in mine:
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.parent.stat().st_mode & 0o777 == 0o700
    # No process swell started carries it where other users can read it.
    pid = service.status()["controller_info"]["pid"]
    for process in [pid, *descendants(pid)]:
        for name in ("cmdline", "environ"):
            with open(f"/proc/{process}/{name}", "rb") as source:
                assert token.encode() not in source.read(), (process, name)
    # Without it, nothing is answered but the health check.
    assert httpx.get(f"{service.address}/api/serve/applications/").status_code == 401
    assert httpx.post(f"{service.address}/api/swell/shutdown").status_code == 401
    assert pid_alive(pid)


def test_an_admin_api_on_every_interface_still_requires_the_token() -> None:
    swell.start(http_options={"port": free_port()}, admin_host="0.0.0.0", admin_port=0)
    try:
        admin_port = swell.status().raw["admin_port"]
        url = f"http://127.0.0.1:{admin_port}/api/serve/applications/"
        assert httpx.get(url).status_code == 401
        token = find_admin_token(admin_port)
        ok = httpx.get(url, headers={"authorization": f"Bearer {token}"})
        assert ok.status_code == 200
    finally:
        swell.shutdown()


def test_controller_killed_under_load_is_adopted_by_its_successor(tmp_path: Path) -> None:
    import threading

    port, admin_port = free_port(), free_port()
    state_dir = tmp_path / "state"
    address = f"http://127.0.0.1:{admin_port}"
    start_args = (
        "start",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
        "--state-dir",
        str(state_dir),
        "--log-file",
        str(tmp_path / "swell.log"),
    )
    assert swell_cli(*start_args).returncode == 0
    service = Service(port, admin_port, tmp_path / "swell.log")
    first_pid = service.status()["controller_info"]["pid"]
    everything = [first_pid, *descendants(first_pid)]
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    ok = client.get(f"http://127.0.0.1:{port}/?name=Ada").status_code == 200
                except httpx.HTTPError:
                    ok = False
                counts["ok" if ok else "failed"] += 1

    worker = threading.Thread(target=load)
    try:
        config = write_config(tmp_path / "serve.yaml", port)
        assert swell_cli("deploy", str(config), "--address", address).returncode == 0
        before = replica_ids(service)
        everything += descendants(first_pid)
        worker.start()
        wait_until(lambda: counts["ok"] > 50, 30, "load to flow")
        os.kill(first_pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(first_pid), 10, "the controller to die")
        # With the controller gone, HAProxy and the replicas keep serving.
        served = counts["ok"]
        wait_until(lambda: counts["ok"] > served + 100, 30, "requests with no controller")
        assert swell_cli(*start_args).returncode == 0
        second_pid = service.status()["controller_info"]["pid"]
        everything.append(second_pid)
        assert second_pid != first_pid
        after = replica_ids(service)
        assert after == before  # adopted, not started again
        status = swell_cli("status", "--address", address).stdout
        assert "deployment Hello: HEALTHY (target 2; RUNNING=2)" in status
        served = counts["ok"]
        wait_until(lambda: counts["ok"] > served + 100, 30, "requests after recovery")
    finally:
        stop.set()
        if worker.is_alive():
            worker.join(30)
        stop_or_kill(everything, address)
    assert counts["failed"] == 0, counts
