"""DeploymentState: the replica state machine, driven with a fake clock (plain floats)."""

from __future__ import annotations

from swell._controller.deployment_state import (
    BACKOFF_BASE_S,
    BACKOFF_MAX_S,
    FAILED_AFTER_ATTEMPTS,
    STABLE_AFTER_S,
    UNHEALTHY_AFTER_FAILED_CHECKS,
    DeploymentState,
    DeploymentStatus,
    Plan,
    ReplicaState,
)

PERIOD_S = 10.0


def make_state(target: int = 1) -> DeploymentState:
    return DeploymentState(name="Model", target=target, health_check_period_s=PERIOD_S)


def start_running(state: DeploymentState, ids: list[str], now: float) -> None:
    """Start these replicas and report them ready, all at ``now``."""
    for index, replica_id in enumerate(ids):
        state.on_started(replica_id, now, pid=1000 + index)
        state.on_ready(replica_id, f"127.0.0.1:{9000 + index}", 1000 + index, now)


def fail_start(state: DeploymentState, replica_id: str, now: float, error: str = "boom") -> None:
    state.on_started(replica_id, now)
    state.on_start_failed(replica_id, error, now)


# Starting ----------------------------------------------------------------------------------


def test_starts_target_when_empty() -> None:
    state = make_state(target=3)
    assert state.plan(0.0) == Plan(start=3)
    assert state.status() == (DeploymentStatus.DEPLOYING, "")


def test_started_replicas_are_not_started_again() -> None:
    state = make_state(target=3)
    for replica_id in ("a", "b", "c"):
        state.on_started(replica_id, 0.0)
    assert state.plan(1.0) == Plan()
    assert state.replica_counts() == {"STARTING": 3}
    assert state.status()[0] is DeploymentStatus.DEPLOYING


def test_ready_makes_running_and_healthy() -> None:
    state = make_state(target=2)
    state.on_started("a", 0.0, pid=11)
    state.on_started("b", 0.0, pid=12)
    state.on_ready("a", "127.0.0.1:9001", 11, 1.0)
    assert state.replicas["a"].state is ReplicaState.RUNNING
    assert state.replicas["a"].address == "127.0.0.1:9001"
    assert state.status()[0] is DeploymentStatus.DEPLOYING
    state.on_ready("b", "127.0.0.1:9002", 12, 2.0)
    assert state.status() == (DeploymentStatus.HEALTHY, "")
    assert state.ever_healthy
    assert state.replica_counts() == {"RUNNING": 2}
    assert state.plan(3.0) == Plan()


def test_ready_for_unknown_or_running_replica_is_ignored() -> None:
    state = make_state()
    state.on_ready("ghost", "127.0.0.1:1", 1, 0.0)
    assert state.replicas == {}
    start_running(state, ["a"], 0.0)
    state.on_ready("a", "127.0.0.1:2", 2, 5.0)
    assert state.replicas["a"].address == "127.0.0.1:9000"
    assert state.replicas["a"].last_health_check_at == 0.0


# Constructor failures and backoff ----------------------------------------------------------


def test_failed_start_backs_off() -> None:
    state = make_state()
    fail_start(state, "a", 100.0, "ValueError: bad weights")
    assert state.replicas == {}
    assert state.retry_at == 100.0 + BACKOFF_BASE_S
    assert state.plan(100.0 + BACKOFF_BASE_S - 0.01) == Plan()
    assert state.plan(100.0 + BACKOFF_BASE_S) == Plan(start=1)


def test_backoff_doubles_up_to_the_cap() -> None:
    state = make_state()
    delays = []
    now = 0.0
    for attempt in range(8):
        fail_start(state, f"r{attempt}", now)
        delays.append(state.retry_at - now)
        now = state.retry_at
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX_S, BACKOFF_MAX_S, BACKOFF_MAX_S]


def test_backoff_stays_capped_after_many_failures() -> None:
    state = make_state()
    now = 0.0
    for attempt in range(1100):
        fail_start(state, f"r{attempt}", now)
        assert state.retry_at - now <= BACKOFF_MAX_S
        now = state.retry_at


def test_one_at_a_time_while_failing() -> None:
    state = make_state(target=3)
    assert state.plan(0.0).start == 3
    fail_start(state, "a", 0.0)
    # The other two are still starting: wait for them.
    state.on_started("b", 0.0)
    state.on_started("c", 0.0)
    state.on_start_failed("b", "boom", 0.5)
    assert state.plan(10.0) == Plan()  # "c" is still starting
    state.on_start_failed("c", "boom", 0.6)
    assert state.plan(state.retry_at - 0.01) == Plan()
    assert state.plan(state.retry_at) == Plan(start=1)
    state.on_started("d", state.retry_at)
    assert state.plan(state.retry_at + 100) == Plan()


def test_ready_resets_backoff() -> None:
    state = make_state(target=2)
    fail_start(state, "a", 0.0)
    fail_start(state, "b", 1.0)
    assert state.failed_attempts == 2
    start_running(state, ["c"], 3.0)
    assert (state.failed_attempts, state.retry_at) == (0, 0.0)
    assert state.plan(3.0) == Plan(start=1)


def test_deploy_failed_after_repeated_failures() -> None:
    state = make_state()
    now = 0.0
    for attempt in range(FAILED_AFTER_ATTEMPTS - 1):
        fail_start(state, f"r{attempt}", now, "RuntimeError: no GPU")
        now = state.retry_at
        assert state.status() == (DeploymentStatus.DEPLOYING, "RuntimeError: no GPU")
    fail_start(state, "last", now, "RuntimeError: no GPU")
    status, message = state.status()
    assert status is DeploymentStatus.DEPLOY_FAILED
    assert f"{FAILED_AFTER_ATTEMPTS} attempts" in message
    assert message.endswith("Last error:\nRuntimeError: no GPU")
    # It keeps retrying.
    assert state.plan(state.retry_at) == Plan(start=1)


def test_failures_with_a_replica_running_are_not_deploy_failed() -> None:
    state = make_state(target=2)
    start_running(state, ["a"], 0.0)
    now = 1.0
    for attempt in range(FAILED_AFTER_ATTEMPTS + 1):
        fail_start(state, f"r{attempt}", now, "boom")
        now = state.retry_at
    assert state.status() == (DeploymentStatus.DEPLOYING, "boom")


# Replicas that die -------------------------------------------------------------------------


def test_died_replica_is_replaced_at_once() -> None:
    state = make_state(target=2)
    start_running(state, ["a", "b"], 0.0)
    state.on_died("a", "exited with code -9", 0.4)
    assert "a" not in state.replicas
    assert state.plan(0.5) == Plan(start=1)
    assert state.status() == (DeploymentStatus.UNHEALTHY, "exited with code -9")


def test_died_unknown_replica_is_ignored() -> None:
    state = make_state()
    start_running(state, ["a"], 0.0)
    state.on_died("ghost", "whatever", 1.0)
    assert state.last_error is None
    assert state.status() == (DeploymentStatus.HEALTHY, "")


def test_replica_that_keeps_crashing_after_ready_is_restarted_with_backoff() -> None:
    state = make_state(target=1)
    start_running(state, ["a"], 0.0)
    # The first death is replaced at once; each replacement that dies young waits longer.
    state.on_died("a", "exited with code 1", 1.0)
    assert state.plan(1.0) == Plan(start=1)
    now, waits = 1.0, []
    for attempt in range(5):
        replica = f"r{attempt}"
        state.on_started(replica, now)
        state.on_ready(replica, "127.0.0.1:9000", 10, now + 0.5)
        now += 1.0
        state.on_died(replica, "exited with code 1", now)
        assert state.plan(now) == Plan()  # not at once
        waits.append(state.retry_at - now)
        now = state.retry_at
        assert state.plan(now) == Plan(start=1)
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_death_after_a_stable_run_is_replaced_at_once() -> None:
    state = make_state(target=1)
    start_running(state, ["a"], 0.0)
    state.on_died("a", "exited", 1.0)
    state.on_started("b", 1.0)
    state.on_ready("b", "127.0.0.1:9000", 10, 2.0)
    state.on_died("b", "exited", 3.0)  # young: backoff
    assert state.plan(3.0) == Plan()
    state.on_started("c", 4.0)
    state.on_ready("c", "127.0.0.1:9000", 11, 4.5)
    state.on_died("c", "exited", 4.5 + STABLE_AFTER_S)  # it had stayed up: at once
    assert state.plan(4.5 + STABLE_AFTER_S) == Plan(start=1)


# Scaling down ------------------------------------------------------------------------------


def scaled_state() -> DeploymentState:
    """Two running (started at 0 and 5) and two starting (started at 6 and 7)."""
    state = make_state(target=4)
    start_running(state, ["run_old"], 0.0)
    start_running(state, ["run_new"], 5.0)
    state.on_started("start_old", 6.0)
    state.on_started("start_new", 7.0)
    return state


def test_scale_down_stops_starting_first_then_newest_running() -> None:
    state = scaled_state()
    state.target = 1
    assert state.plan(8.0).stop == ("start_new", "start_old", "run_new")
    state.target = 3
    assert state.plan(8.0).stop == ("start_new",)
    state.target = 4
    assert state.plan(8.0).stop == ()


def test_scale_down_with_only_running_stops_newest() -> None:
    state = make_state(target=3)
    for now, replica_id in [(0.0, "first"), (2.0, "third"), (1.0, "second")]:
        start_running(state, [replica_id], now)
    state.target = 1
    assert state.plan(3.0) == Plan(stop=("third", "second"))


def test_stopping_replicas_are_not_stopped_again() -> None:
    state = scaled_state()
    state.target = 3
    state.on_stopping("start_new")
    assert state.plan(8.0).stop == ()
    assert state.replica_counts() == {"RUNNING": 2, "STARTING": 1, "STOPPING": 1}
    state.on_stopped("start_new")
    assert "start_new" not in state.replicas


def test_scale_up() -> None:
    state = make_state(target=1)
    start_running(state, ["a"], 0.0)
    state.target = 4
    assert state.plan(1.0) == Plan(start=3)


# Health checks -----------------------------------------------------------------------------


def test_health_check_after_period() -> None:
    state = make_state()
    start_running(state, ["a"], 100.0)
    assert state.plan(100.0 + PERIOD_S - 0.01).check_health == ()
    assert state.plan(100.0 + PERIOD_S).check_health == ("a",)


def test_no_health_check_while_one_is_in_flight() -> None:
    state = make_state()
    start_running(state, ["a"], 0.0)
    state.on_health_check_started("a", 10.0)
    assert state.plan(100.0).check_health == ()
    state.on_health_result("a", ok=True)
    assert state.plan(19.9).check_health == ()
    assert state.plan(20.0).check_health == ("a",)


def test_starting_replicas_are_not_health_checked() -> None:
    state = make_state()
    state.on_started("a", 0.0)
    assert state.plan(1000.0).check_health == ()


def check(state: DeploymentState, replica_id: str, now: float, ok: bool) -> None:
    state.on_health_check_started(replica_id, now)
    state.on_health_result(replica_id, ok, "timed out")


def test_unhealthy_replica_is_replaced() -> None:
    state = make_state(target=2)
    start_running(state, ["a", "b"], 0.0)
    for n in range(UNHEALTHY_AFTER_FAILED_CHECKS - 1):
        check(state, "a", 1.0 + n, ok=False)
        plan = state.plan(1.0 + n)
        assert (plan.start, plan.stop) == (0, ())
    check(state, "a", 5.0, ok=False)
    assert state.replicas["a"].replace
    assert state.last_error == "replica a failed its health check: timed out"
    plan = state.plan(5.0)
    assert (plan.start, plan.stop) == (1, ("a",))
    # A replica being replaced is not health-checked any more; the others still are.
    assert state.plan(1000.0).check_health == ("b",)
    state.on_stopping("a")
    plan = state.plan(5.0)
    assert (plan.start, plan.stop) == (1, ())


def test_replacement_status_is_unhealthy_until_replaced() -> None:
    state = make_state(target=1)
    start_running(state, ["a"], 0.0)
    for n in range(UNHEALTHY_AFTER_FAILED_CHECKS):
        check(state, "a", 10.0 * (n + 1), ok=False)
    state.on_stopping("a")
    status, message = state.status()
    assert status is DeploymentStatus.UNHEALTHY
    assert "failed its health check" in message
    state.on_started("a2", 40.0)
    state.on_ready("a2", "127.0.0.1:9100", 2000, 41.0)
    state.on_stopped("a")
    assert state.status() == (DeploymentStatus.HEALTHY, "")


def test_success_resets_failed_checks() -> None:
    state = make_state()
    start_running(state, ["a"], 0.0)
    for _ in range(UNHEALTHY_AFTER_FAILED_CHECKS - 1):
        check(state, "a", 10.0, ok=False)
    check(state, "a", 20.0, ok=True)
    assert state.replicas["a"].failed_health_checks == 0
    for _ in range(UNHEALTHY_AFTER_FAILED_CHECKS - 1):
        check(state, "a", 30.0, ok=False)
    assert not state.replicas["a"].replace
    assert state.plan(30.0).stop == ()
    check(state, "a", 40.0, ok=False)
    assert state.replicas["a"].replace


def test_health_result_for_unknown_replica_is_ignored() -> None:
    state = make_state()
    state.on_health_result("ghost", ok=False, detail="x")
    state.on_health_check_started("ghost", 1.0)
    assert state.replicas == {}
    assert state.last_error is None
