"""Faults under steady load, short enough for CI (``bench/chaos.py`` runs them for minutes).

Each test starts its own `swell start` instance (with a state dir), serves the chaos app
(2 ingress replicas, 2 model replicas), drives a mix of unary, streamed and composed requests
at 127.0.0.1, injects one kind of fault, and checks what must hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos import scenarios
from tests.chaos.load import summary
from tests.chaos.service import ChaosService

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[ChaosService]:
    service = scenarios.fresh_service(tmp_path)
    try:
        yield service
    finally:
        service.stop()


def report(outcome: scenarios.Outcome) -> str:
    return f"{outcome.fault}  x{outcome.faults}\n{summary(outcome.reports)}\n{outcome.facts}"


def test_sigkill_a_replica_every_few_seconds(service: ChaosService) -> None:
    outcome = scenarios.kill_replicas(service, duration_s=12, every_s=4)
    print(report(outcome))
    assert outcome.idempotent_unary_failed() == 0, report(outcome)
    for kind in ("post", "stream", "compose_stream"):
        assert outcome.failed(kind) <= outcome.faults, report(outcome)


def test_sigstop_a_replica(service: ChaosService) -> None:
    outcome = scenarios.stop_a_replica(service, stopped_s=8)
    print(report(outcome))
    assert outcome.facts["same_replica_kept"], report(outcome)
    total_failed = sum(r.failed for r in outcome.reports.values())
    assert total_failed <= 4, report(outcome)  # at most what was in flight on it


def test_sigkill_haproxy_worker_then_master(service: ChaosService) -> None:
    outcome = scenarios.kill_haproxy(service)
    print(report(outcome))
    assert outcome.facts["no_replica_restarted"], report(outcome)
    assert all(s <= 2.0 for s in outcome.facts["serving_again_after_s"]), report(outcome)


def test_sigkill_the_controller(service: ChaosService) -> None:
    outcome = scenarios.kill_controller(service)
    print(report(outcome))
    assert outcome.facts["replicas_adopted"], report(outcome)
    assert sum(r.failed for r in outcome.reports.values()) == 0, report(outcome)


def test_rolling_update_with_streams(service: ChaosService) -> None:
    outcome = scenarios.rolling_update(service, stream_s=10)
    print(report(outcome))
    assert outcome.facts["serving_version"] == "v2"
    assert sum(r.failed for r in outcome.reports.values()) == 0, report(outcome)


def test_a_replica_that_dies_while_starting(service: ChaosService) -> None:
    outcome = scenarios.dies_while_starting(service, watch_s=12)
    print(report(outcome))
    assert outcome.facts["says_why"], report(outcome)
    assert outcome.facts["broken_status"] == "DEPLOY_FAILED", report(outcome)
    # Backoff (1, 2, 4, 8 s...): a handful of attempts in the window, not one per tick.
    assert outcome.faults <= 6, report(outcome)
    assert sum(r.failed for r in outcome.reports.values()) == 0, report(outcome)
