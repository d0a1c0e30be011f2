"""``/-/healthz`` as every node's HAProxy answers it (KubeRay's serve probes read it): a real
HAProxy per binary on this machine, with the wake-up backup server in every backend, as swell
runs it, because a backup must never count as a live replica."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import haproxy_binaries, wait_until
from tests.integration.ingress_harness import Ingress, Upstream, running_ingress


@pytest.fixture(params=haproxy_binaries())
def binary(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


def health(ingress: Ingress) -> tuple[int, str]:
    answer = httpx.get(ingress.url + "/-/healthz", timeout=5)
    return answer.status_code, answer.text


def wait_health(ingress: Ingress, expected: tuple[int, str]) -> None:
    wait_until(lambda: health(ingress) == expected, 15, f"/-/healthz to answer {expected}")


def test_healthz_follows_routes_live_replicas_and_draining(binary: str, tmp_path: Path) -> None:
    wake = Upstream("wake")  # stands in for the controller's wake-up server (a backup, no check)
    try:
        with running_ingress(binary, tmp_path / "rt", wake_address=wake.address) as ingress:
            check_health_states(ingress)
    finally:
        wake.stop()


def check_health_states(ingress: Ingress) -> None:
    manager = ingress.manager
    assert health(ingress) == (503, "no routes yet")

    ingress.call(manager.set_route("a", "/"))
    assert health(ingress) == (503, "no replicas yet")  # the backup does not count

    first = ingress.upstream("r0")
    ingress.call(manager.add_server("a", first.name, first.address, 5))
    wait_health(ingress, (200, "success"))

    ingress.call(manager.drain_server("a", first.name))
    wait_health(ingress, (503, "no replicas yet"))  # draining replicas take no requests

    second = ingress.upstream("r1")
    ingress.call(manager.add_server("a", second.name, second.address, 5))
    ingress.call(manager.set_route("b", "/b"))  # a second route: any live backend is enough
    wait_health(ingress, (200, "success"))
    second.stop()  # a replica that dies: HAProxy's checks mark it down
    wait_health(ingress, (503, "no replicas yet"))

    third = ingress.upstream("r2")
    ingress.call(manager.add_server("b", third.name, third.address, 5))
    wait_health(ingress, (200, "success"))
    ingress.call(manager.mark_draining())
    assert health(ingress) == (503, "draining")
    ingress.call(manager.set_route("c", "/c"))  # a reload keeps saying so
    assert health(ingress) == (503, "draining")
