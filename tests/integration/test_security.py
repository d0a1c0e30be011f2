"""Nobody gets in: control paths, bodies, error bodies, private files (real processes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import swell
from swell import api
from swell._protocol import (
    CLUSTER_TOKEN_HEADER,
    CONTROL_HEALTH_PATH,
    CONTROL_READY_PATH,
    CONTROL_RECONFIGURE_PATH,
)
from tests.integration import hardening_apps
from tests.integration.conftest import Swell, free_port, replica_stats, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def only_replica(app: str, deployment: str) -> swell.serve_status.ReplicaStatus:
    replicas = swell.status().applications[app].deployments[deployment].replicas
    assert len(replicas) == 1
    return replicas[0]


def health_checks(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


def test_control_paths_are_not_reachable_through_haproxy(serve: Swell, tmp_path: Path) -> None:
    marker = tmp_path / "health-checks"
    app = hardening_apps.CountsHealthChecks.options(
        user_config={"marker": str(marker)}, health_check_period_s=3600
    ).bind()
    swell.run(app)
    before = health_checks(marker)
    tricks = [
        "/-/swell/health",
        "/-/%73well/health",
        "/-/%73well/stats",
        "/%2D/swell/stats",
        "/-/swell/%68ealth",
        "/-/swell/reconfigure",
    ]
    for path in tricks:
        for method in ("GET", "POST"):
            answer = serve.client.request(method, path)
            assert answer.status_code == 200, (method, path, answer.text)
            assert answer.json()["user_code"] is True, (method, path)  # the user's code answered
    assert health_checks(marker) == before, "a control endpoint ran for a client request"


def test_the_control_port_requires_the_cluster_token(serve: Swell) -> None:
    swell.run(hardening_apps.health_counting_app)
    control = only_replica("default", "CountsHealthChecks").control_address
    assert control is not None
    base = f"http://{control}"
    assert httpx.get(base + CONTROL_READY_PATH).status_code == 200  # HAProxy's check: open
    assert httpx.get(base + CONTROL_HEALTH_PATH).status_code == 403
    wrong = {CLUSTER_TOKEN_HEADER: "not-the-token"}
    assert httpx.get(base + CONTROL_HEALTH_PATH, headers=wrong).status_code == 403
    assert httpx.post(base + CONTROL_RECONFIGURE_PATH, content=b"x").status_code == 403
    assert api._instance is not None and api._instance.controller is not None
    right = {CLUSTER_TOKEN_HEADER: api._instance.controller.cluster_token}
    assert httpx.get(base + CONTROL_HEALTH_PATH, headers=right).status_code == 200


def test_a_remote_traceback_never_reaches_the_client(serve: Swell) -> None:
    swell.run(hardening_apps.failing_compose_app)
    answer = serve.client.get("/", headers={"x-request-id": "trace-me"})
    assert answer.status_code == 500
    assert answer.text == "Internal Server Error (request id trace-me)"
    assert "secret-internal-detail" not in answer.text
    assert serve.client.get("/").status_code == 500  # and the replica keeps serving


def test_a_request_body_streams_to_the_handler_as_it_arrives(serve: Swell, tmp_path: Path) -> None:
    swell.run(hardening_apps.body_reader_app)
    log = tmp_path / "chunks"
    # HAProxy holds a body until its first buffer (16 KiB) is full or the body ends (so a slow
    # client cannot hold a replica's connection); past that, the body streams.
    first, second = b"a" * 64 * 1024, b"b" * 2000

    def body() -> Iterator[bytes]:
        yield first
        # The handler must see the first chunk before the client sends the second: if the
        # replica read the whole body before calling the handler, this would time out.
        wait_until(lambda: log.exists() and log.read_text().strip() != "", 20, "chunk 1")
        yield second

    answer = serve.client.post("/", params={"log": str(log)}, content=body())
    assert answer.json()["bytes"] == len(first) + len(second)
    assert int(log.read_text().splitlines()[0]) <= len(first)


def test_a_client_that_leaves_mid_upload_leaves_the_replica_serving(serve: Swell) -> None:
    swell.run(hardening_apps.body_reader_app)
    with socket.create_connection(("127.0.0.1", serve.port)) as raw:
        raw.sendall(
            b"POST /?log=/dev/null HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
            + b"x" * 1000
        )
    answer = serve.client.post("/", params={"log": os.devnull}, content=b"y" * 10)
    assert answer.json() == {"bytes": 10, "chunks": 1}


@pytest.fixture
def private_state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "state"
    yield state
    swell.shutdown()


def test_the_state_dir_and_checkpoint_are_private(private_state: Path) -> None:
    swell.start(http_options={"port": free_port()}, admin_port=0, state_dir=str(private_state))
    swell.run(hardening_apps.health_counting_app)
    checkpoint = private_state / "checkpoint.pickle"
    wait_until(checkpoint.exists, 10, "a checkpoint")
    assert private_state.stat().st_mode & 0o777 == 0o700
    assert checkpoint.stat().st_mode & 0o777 == 0o600
    assert (private_state / "admin.token").stat().st_mode & 0o777 == 0o600


def test_a_checkpoint_others_can_write_is_refused(private_state: Path) -> None:
    private_state.mkdir(mode=0o700)
    planted = private_state / "checkpoint.pickle"
    planted.write_bytes(b"not a pickle anyone should load")
    planted.chmod(0o666)
    with pytest.raises(swell.ConfigError, match="not private to this user"):
        swell.start(http_options={"port": free_port()}, admin_port=0, state_dir=str(private_state))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand a directory to another user")
def test_a_state_dir_owned_by_another_user_is_refused(private_state: Path) -> None:
    private_state.mkdir(mode=0o700)
    os.chown(private_state, 65534, 65534)
    with pytest.raises(swell.ConfigError, match="belongs to another user"):
        swell.start(http_options={"port": free_port()}, admin_port=0, state_dir=str(private_state))


def test_two_controllers_never_share_a_state_dir(private_state: Path, tmp_path: Path) -> None:
    swell.start(http_options={"port": free_port()}, admin_port=0, state_dir=str(private_state))
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "swell",
            "start",
            "--port",
            str(free_port()),
            "--admin-port",
            str(free_port()),
            "--state-dir",
            str(private_state),
            "--log-file",
            str(tmp_path / "second.log"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert "another swell controller" in second.stderr


def test_many_clients_cannot_starve_the_health_check(serve: Swell, tmp_path: Path) -> None:
    """Sync request handlers fill every user thread; check_health still answers at once."""
    swell.run(hardening_apps.busy_sync_app)
    gate = tmp_path / "gate"
    control = only_replica("default", "BusySync").control_address
    assert api._instance is not None and api._instance.controller is not None
    token = {CLUSTER_TOKEN_HEADER: api._instance.controller.cluster_token}
    results: list[int] = []

    def busy() -> None:
        answer = httpx.get(f"{serve.url}/", params={"gate": str(gate)}, timeout=60)
        results.append(answer.status_code)

    # More than Python's default thread pool on this machine (min(32, cpus + 4)), which the
    # health check once shared with request handlers.
    busy_count = 8
    workers = [threading.Thread(target=busy) for _ in range(busy_count)]
    for worker in workers:
        worker.start()
    try:
        assert control is not None
        wait_until(lambda: replica_stats(control)["ongoing"] == busy_count, 20, "busy requests")
        health = httpx.get(f"http://{control}{CONTROL_HEALTH_PATH}", headers=token, timeout=10)
        assert health.status_code == 200
        # Still busy: the health check did not wait for them.
        assert replica_stats(control)["ongoing"] == busy_count
    finally:
        gate.touch()
        for worker in workers:
            worker.join(60)
    assert results == [200] * busy_count


def test_a_chunked_body_past_the_limit_gets_413_from_the_replica() -> None:
    """HAProxy refuses a declared Content-Length past the limit; a chunked body declares none,
    so the replica counts it as it streams."""
    port = free_port()
    swell.start(http_options={"port": port, "max_request_body_bytes": 1000}, admin_port=0)
    try:
        swell.run(hardening_apps.body_reader_app)
        url = f"http://127.0.0.1:{port}/"

        def chunks(total: int) -> Iterator[bytes]:
            for _ in range(total // 500):
                yield b"z" * 500

        small = httpx.post(url, params={"log": os.devnull}, content=chunks(1000))
        assert small.json() == {"bytes": 1000, "chunks": small.json()["chunks"]}
        big = httpx.post(url, params={"log": os.devnull}, content=chunks(5000))
        assert big.status_code == 413
        assert "max_request_body_bytes" in big.text
        # And the replica keeps serving.
        assert httpx.post(url, params={"log": os.devnull}, content=b"ok").status_code == 200
    finally:
        swell.shutdown()
