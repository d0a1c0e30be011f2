"""Autoscaler: the per-deployment scaling decision, driven with a fake clock (plain floats)."""

from __future__ import annotations

from typing import Any

import pytest

from swell._controller.autoscaler import Autoscaler, MetricsWindow, desired_replicas
from swell.config import AutoscalingConfig

UP_S = 30.0
DOWN_S = 600.0


def make_config(**overrides: Any) -> AutoscalingConfig:
    fields: dict[str, Any] = {
        "min_replicas": 1,
        "max_replicas": 10,
        "target_ongoing_requests": 2.0,
        "upscale_delay_s": UP_S,
        "downscale_delay_s": DOWN_S,
        "look_back_period_s": 30.0,
        "metrics_interval_s": 10.0,
    }
    fields.update(overrides)
    return AutoscalingConfig(**fields)


# desired_replicas ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("current", "load", "expected"),
    [
        (2, 4.0, 2),  # exactly at target: stay
        (2, 3.0, 2),  # below target, but ceil(3 / 2) == 2 replicas are still needed
        (2, 4.5, 3),  # a little over: one more
        (2, 12.0, 6),  # load / target
        (4, 2.0, 1),  # well under: down to what the load needs
        (4, 0.0, 1),  # no load: down to min_replicas
        (3, 4.000000000000001, 2),  # float noise from averaging does not add a replica
    ],
)
def test_desired_is_load_over_target(current: int, load: float, expected: int) -> None:
    assert desired_replicas(make_config(), current, load) == expected


def test_desired_is_clamped_to_min_and_max() -> None:
    config = make_config(min_replicas=2, max_replicas=5)
    assert desired_replicas(config, 3, 100.0) == 5
    assert desired_replicas(config, 3, 0.0) == 2


def test_upscaling_factor_takes_part_of_the_step_rounded_up() -> None:
    config = make_config(upscaling_factor=0.5)
    # raw 10, current 2: 2 + 0.5 * 8 = 6
    assert desired_replicas(config, 2, 20.0) == 6
    # raw 3, current 2: 2 + 0.5 * 1 = 2.5 -> 3
    assert desired_replicas(config, 2, 6.0) == 3
    # an upscaling factor above 1 overshoots
    assert desired_replicas(make_config(upscaling_factor=2.0), 2, 8.0) == 6


def test_downscaling_factor_takes_part_of_the_step() -> None:
    config = make_config(downscaling_factor=0.5)
    # raw 2, current 10: 10 - 0.5 * 8 = 6
    assert desired_replicas(config, 10, 4.0) == 6
    # the upscaling factor does not apply on the way down
    assert desired_replicas(make_config(upscaling_factor=0.1), 10, 4.0) == 2


def test_small_downscaling_factor_still_steps_down() -> None:
    config = make_config(downscaling_factor=0.1)
    # raw 3, current 4: 4 - 0.1 = 3.9 rounds back up to 4; it must still go down by one.
    assert desired_replicas(config, 4, 6.0) == 3


def test_desired_from_zero_is_one_with_any_load() -> None:
    config = make_config(min_replicas=0)
    assert desired_replicas(config, 0, 0.5) == 1
    assert desired_replicas(config, 0, 50.0) == 1
    assert desired_replicas(config, 0, 0.0) == 0
    assert desired_replicas(make_config(min_replicas=0, upscaling_factor=2.5), 0, 1.0) == 3


# Autoscaler: delays -------------------------------------------------------------------------


def test_initial_state_has_nothing_pending() -> None:
    config = make_config()
    scaler = Autoscaler(config)
    assert scaler.pending is None
    assert scaler.metrics.look_back_period_s == config.look_back_period_s
    assert scaler.metrics.total_load(0.0) == 0.0


def test_steady_load_keeps_current() -> None:
    scaler = Autoscaler(make_config())
    for step in range(100):
        assert scaler.decide(step * 10.0, 2, 4.0) == 2
    assert scaler.pending is None


def test_upscale_only_after_sustained_high_load() -> None:
    scaler = Autoscaler(make_config())
    assert scaler.decide(0.0, 2, 12.0) == 2
    assert scaler.pending == (1, 0.0)
    assert scaler.decide(10.0, 2, 12.0) == 2
    assert scaler.decide(29.9, 2, 12.0) == 2
    assert scaler.decide(30.0, 2, 12.0) == 6
    assert scaler.pending is None


def test_upscale_uses_the_latest_desired_count() -> None:
    scaler = Autoscaler(make_config())
    scaler.decide(0.0, 2, 6.0)  # wants 3
    assert scaler.decide(UP_S, 2, 16.0) == 8  # still above throughout; now wants 8


def test_dip_resets_the_upscale_timer() -> None:
    scaler = Autoscaler(make_config())
    assert scaler.decide(0.0, 2, 12.0) == 2
    assert scaler.decide(20.0, 2, 4.0) == 2  # back at target: the clock stops
    assert scaler.pending is None
    assert scaler.decide(25.0, 2, 12.0) == 2
    assert scaler.decide(50.0, 2, 12.0) == 2  # 25s of high load since the dip
    assert scaler.decide(55.0, 2, 12.0) == 6


def test_flip_to_low_resets_the_upscale_timer() -> None:
    scaler = Autoscaler(make_config(downscale_delay_s=100.0))
    scaler.decide(0.0, 4, 20.0)
    assert scaler.decide(20.0, 4, 0.0) == 4
    assert scaler.pending == (-1, 20.0)
    assert scaler.decide(40.0, 4, 20.0) == 4  # high again, but only since 40
    assert scaler.decide(69.0, 4, 20.0) == 4
    assert scaler.decide(70.0, 4, 20.0) == 10


def test_downscale_after_downscale_delay() -> None:
    scaler = Autoscaler(make_config())
    assert scaler.decide(0.0, 5, 2.0) == 5
    assert scaler.decide(DOWN_S - 0.1, 5, 2.0) == 5
    assert scaler.decide(DOWN_S, 5, 2.0) == 1


def test_spike_resets_the_downscale_timer() -> None:
    scaler = Autoscaler(make_config())
    scaler.decide(0.0, 5, 2.0)
    assert scaler.decide(300.0, 5, 10.0) == 5  # at target for 5 replicas
    scaler.decide(310.0, 5, 2.0)
    assert scaler.decide(DOWN_S, 5, 2.0) == 5
    assert scaler.decide(310.0 + DOWN_S, 5, 2.0) == 1


def test_timer_restarts_after_a_change() -> None:
    scaler = Autoscaler(make_config())
    scaler.decide(0.0, 2, 8.0)
    assert scaler.decide(UP_S, 2, 8.0) == 4
    # The controller now targets 4, and the load keeps growing.
    assert scaler.decide(UP_S + 10.0, 4, 16.0) == 4
    assert scaler.decide(2 * UP_S + 10.0, 4, 16.0) == 8


def test_zero_delays_act_on_the_first_call() -> None:
    scaler = Autoscaler(make_config(upscale_delay_s=0.0, downscale_delay_s=0.0))
    assert scaler.decide(0.0, 2, 12.0) == 6
    assert scaler.decide(1.0, 6, 2.0) == 1


def test_decisions_are_clamped() -> None:
    scaler = Autoscaler(make_config(min_replicas=2, max_replicas=4))
    scaler.decide(0.0, 3, 100.0)
    assert scaler.decide(UP_S, 3, 100.0) == 4
    assert scaler.decide(UP_S + 1.0, 4, 100.0) == 4  # at max: nothing pending
    assert scaler.pending is None
    scaler.decide(1000.0, 4, 0.0)
    assert scaler.decide(1000.0 + DOWN_S, 4, 0.0) == 2


def test_out_of_bounds_current_is_corrected_at_once() -> None:
    scaler = Autoscaler(make_config(min_replicas=2, max_replicas=4))
    assert scaler.decide(0.0, 7, 100.0) == 4
    assert scaler.decide(0.0, 1, 0.0) == 2


def test_factors_apply_in_decide() -> None:
    scaler = Autoscaler(make_config(upscaling_factor=0.5, downscaling_factor=0.5, max_replicas=20))
    scaler.decide(0.0, 2, 20.0)
    assert scaler.decide(UP_S, 2, 20.0) == 6  # halfway from 2 to 10
    scaler.decide(100.0, 10, 4.0)
    assert scaler.decide(100.0 + DOWN_S, 10, 4.0) == 6  # halfway from 10 to 2


# Scale to and from zero ---------------------------------------------------------------------


def test_scale_from_zero_is_immediate() -> None:
    scaler = Autoscaler(make_config(min_replicas=0, upscale_delay_s=1000.0))
    assert scaler.decide(0.0, 0, 0.0) == 0
    assert scaler.decide(5.0, 0, 0.0, waiting_without_replica=1) == 1
    assert scaler.pending is None


def test_zero_stays_zero_without_load() -> None:
    scaler = Autoscaler(make_config(min_replicas=0))
    for step in range(10):
        assert scaler.decide(step * 100.0, 0, 0.0) == 0


def test_waiting_requests_count_as_load() -> None:
    scaler = Autoscaler(make_config(upscale_delay_s=0.0))
    assert scaler.decide(0.0, 1, 2.0, waiting_without_replica=4) == 3


def test_scale_to_zero_after_downscale_delay() -> None:
    scaler = Autoscaler(make_config(min_replicas=0))
    assert scaler.decide(0.0, 1, 0.0) == 1
    assert scaler.decide(DOWN_S - 1.0, 1, 0.0) == 1
    assert scaler.decide(DOWN_S, 1, 0.0) == 0


def test_scale_to_zero_goes_through_one() -> None:
    scaler = Autoscaler(make_config(min_replicas=0))
    scaler.decide(0.0, 3, 0.0)
    assert scaler.decide(DOWN_S, 3, 0.0) == 1
    assert scaler.decide(DOWN_S + 10.0, 1, 0.0) == 1
    assert scaler.decide(2 * DOWN_S + 10.0, 1, 0.0) == 0


def test_min_replicas_keeps_the_last_replica() -> None:
    scaler = Autoscaler(make_config(min_replicas=1))
    for step in range(200):
        assert scaler.decide(step * 10.0, 1, 0.0) == 1


# MetricsWindow ------------------------------------------------------------------------------


def test_window_averages_each_replica_and_sums() -> None:
    window = MetricsWindow(look_back_period_s=30.0)
    window.record("a", 0.0, ongoing=2, queued=0)
    window.record("a", 10.0, ongoing=4, queued=2)
    window.record("b", 10.0, ongoing=1, queued=0)
    assert window.replica_load("a", 10.0) == pytest.approx(4.0)
    assert window.replica_load("b", 10.0) == pytest.approx(1.0)
    assert window.total_load(10.0) == pytest.approx(5.0)


def test_window_forgets_samples_older_than_look_back() -> None:
    window = MetricsWindow(look_back_period_s=30.0)
    window.record("a", 0.0, ongoing=10)
    window.record("a", 20.0, ongoing=2)
    assert window.total_load(30.0) == pytest.approx(6.0)  # 0.0 is exactly at the edge: kept
    assert window.total_load(30.1) == pytest.approx(2.0)
    assert window.total_load(50.1) == 0.0


def test_recording_prunes_old_samples() -> None:
    window = MetricsWindow(look_back_period_s=10.0)
    window.record("a", 0.0, ongoing=100)
    window.record("a", 15.0, ongoing=1)
    assert window.replica_load("a", 15.0) == pytest.approx(1.0)


def test_forget_drops_a_replica() -> None:
    window = MetricsWindow(look_back_period_s=30.0)
    window.record("a", 0.0, ongoing=3)
    window.record("b", 0.0, ongoing=5)
    window.forget("a")
    window.forget("never-seen")
    assert window.replica_load("a", 1.0) == 0.0
    assert window.total_load(1.0) == pytest.approx(5.0)


def test_window_feeds_decide() -> None:
    scaler = Autoscaler(make_config(upscale_delay_s=20.0))
    for t in (0.0, 10.0, 20.0):
        for replica in ("a", "b"):
            scaler.metrics.record(replica, t, ongoing=5, queued=1)
        decision = scaler.decide(t, 2, scaler.metrics.total_load(t))
    assert decision == 6  # 12 requests / 2 per replica, after 20s of it
