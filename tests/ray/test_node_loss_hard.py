"""A worker node lost with its replica processes (killed at once, as on a machine that
vanishes): replaced on the other nodes while their proxies keep serving. Its own cluster,
since the removal uses up a worker."""

from __future__ import annotations

import pytest

from tests.ray.conftest import RayCluster
from tests.ray.test_node_loss import remove_a_worker_under_load

pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(180)


def test_lost_worker_and_its_replica_processes_are_replaced(swell_on_ray: RayCluster) -> None:
    remove_a_worker_under_load(swell_on_ray, kill_its_processes=True)
