"""ray_actor_options on one machine: GPUs handed out by id, what does not fit refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import swell
from tests.integration import hardening_apps
from tests.integration.conftest import free_port


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """swell sees GPUs through CUDA_VISIBLE_DEVICES (else nvidia-smi -L); no device is used."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    swell.start(http_options={"port": free_port()}, admin_port=0)
    try:
        yield
    finally:
        swell.shutdown()


def devices_of(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as environ:
        for entry in environ.read().split(b"\0"):
            if entry.startswith(b"CUDA_VISIBLE_DEVICES="):
                return entry.split(b"=", 1)[1].decode()
    return ""


def test_gpu_fractions_are_packed_and_each_replica_sees_its_device(two_gpus: None) -> None:
    swell.run(hardening_apps.half_a_gpu_app)
    replicas = swell.status().applications["default"].deployments["HalfAGpu"].replicas
    devices = sorted(devices_of(r.pid) for r in replicas if r.pid is not None)
    assert devices == ["0", "0", "1"]  # two halves share a device before the next is used
    handle = swell.get_deployment_handle("HalfAGpu", "default")
    assert handle.devices.remote().result(timeout_s=30) in ("0", "1")


def test_a_replica_that_cannot_fit_is_refused_with_the_reason(two_gpus: None) -> None:
    too_big = hardening_apps.HalfAGpu.options(
        num_replicas=1, ray_actor_options={"num_gpus": 4}
    ).bind()
    with pytest.raises(swell.DeploymentFailedError, match=r"num_gpus=4 is more than the 2 GPU"):
        swell.run(too_big)
