"""One deployment's autoscaling decision: pure logic, no I/O, no clock.

The controller records each replica's load report into a ``MetricsWindow`` and, once every
``metrics_interval_s``, asks ``Autoscaler.decide(now, ...)`` for the replica count to aim for.
Time is always passed in, so unit tests drive everything with plain floats.

The policy follows Ray Serve's default (queue-length) autoscaling policy so that a Ray Serve
``autoscaling_config`` behaves the same here:

* load = sum over replicas of each replica's average (ongoing + queued) requests over the last
  ``look_back_period_s``, plus requests waiting with no replica to go to;
* raw desired replicas = load / ``target_ongoing_requests``;
* the step from the current count towards it is scaled by ``upscaling_factor`` or
  ``downscaling_factor``, rounded up, and clamped to [``min_replicas``, ``max_replicas``];
* the change only happens once it has been wanted continuously for ``upscale_delay_s`` /
  ``downscale_delay_s``, except scaling up from zero replicas, which happens at once because
  requests are waiting with nothing to serve them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from swell.config import AutoscalingConfig

# Averaging many float samples can leave a load of e.g. 4.000000000000001; rounding that up
# would add a replica for nothing, so values this close to an integer count as that integer.
_ROUNDING_TOLERANCE = 1e-9


def _ceil(value: float) -> int:
    return math.ceil(value - _ROUNDING_TOLERANCE)


def _clamp(config: AutoscalingConfig, replicas: int) -> int:
    return max(config.min_replicas, min(config.max_replicas, replicas))


def _factor(value: float | None) -> float:
    return 1.0 if value is None else value


@dataclass(frozen=True)
class LoadSample:
    """One report from a replica: requests it is running and requests queued on it."""

    at: float
    ongoing: int
    queued: int

    @property
    def load(self) -> int:
        return self.ongoing + self.queued


@dataclass
class MetricsWindow:
    """Recent load reports per replica, kept for ``look_back_period_s``.

    Averaging over a window rather than using the latest report keeps one burst (or one idle
    moment) from moving the replica count; the delays then decide whether a trend lasts.
    """

    look_back_period_s: float
    _samples: dict[str, deque[LoadSample]] = field(default_factory=dict, init=False, repr=False)

    def record(self, replica_id: str, now: float, ongoing: int, queued: int = 0) -> None:
        """Add a replica's report taken at ``now``."""
        samples = self._samples.setdefault(replica_id, deque())
        samples.append(LoadSample(now, ongoing, queued))
        self._prune(replica_id, now)

    def replica_ids(self) -> list[str]:
        return list(self._samples)

    def forget(self, replica_id: str) -> None:
        """Drop a replica that stopped or died, so its old load stops counting at once."""
        self._samples.pop(replica_id, None)

    def replica_load(self, replica_id: str, now: float) -> float:
        """A replica's average (ongoing + queued) over the window; 0.0 without samples."""
        self._prune(replica_id, now)
        samples = self._samples.get(replica_id)
        if not samples:
            return 0.0
        return sum(s.load for s in samples) / len(samples)

    def total_load(self, now: float) -> float:
        """Sum over replicas of each one's windowed average: what ``decide`` takes."""
        return sum(self.replica_load(replica_id, now) for replica_id in list(self._samples))

    def _prune(self, replica_id: str, now: float) -> None:
        samples = self._samples.get(replica_id)
        if samples is None:
            return
        oldest_kept = now - self.look_back_period_s
        while samples and samples[0].at < oldest_kept:
            samples.popleft()
        if not samples:
            # A replica whose reports all aged out contributes nothing; drop it so a silent
            # replica does not linger in the map forever.
            del self._samples[replica_id]


def desired_replicas(config: AutoscalingConfig, current_replicas: int, total_load: float) -> int:
    """The replica count the load calls for right now, before any delay.

    ``total_load`` is the deployment's windowed load plus requests waiting with no replica.
    With no replica at all the load cannot be spread over anything, so any load asks for
    ``ceil(upscaling_factor)`` replicas (at least one), as Ray does; the next decisions size
    the deployment from the load those replicas then report.
    """
    if current_replicas <= 0:
        if total_load > 0:
            return _clamp(config, max(1, math.ceil(_factor(config.upscaling_factor))))
        return _clamp(config, 0)
    raw = total_load / config.target_ongoing_requests
    delta = raw - current_replicas
    factor = _factor(config.upscaling_factor if delta > 0 else config.downscaling_factor)
    scaled = _ceil(current_replicas + factor * delta)
    if _ceil(raw) < current_replicas and scaled == current_replicas:
        # A small downscaling_factor times a small gap rounds back up to the current count,
        # which would pin the deployment above what it needs forever; step down by one.
        scaled -= 1
    return _clamp(config, scaled)


class Autoscaler:
    """The autoscaling decision for one deployment, with the up/down delays applied.

    It remembers only which way it has wanted to move and since when: a scale-up happens once
    the desired count has stayed above the current one for ``upscale_delay_s`` (a scale-down:
    below, for ``downscale_delay_s``). Any call where the desired count is back at the current
    one, or on the other side, restarts that clock, so a brief spike or lull never resizes the
    deployment. ``metrics_interval_s`` is how often the controller calls ``decide``; the delays
    are measured in time, so the decision does not depend on that interval.
    """

    def __init__(self, config: AutoscalingConfig) -> None:
        self.config = config
        self.metrics = MetricsWindow(config.look_back_period_s)
        self._direction = 0  # +1 wanting to scale up, -1 down, 0 neither
        self._since = 0.0

    @property
    def pending(self) -> tuple[int, float] | None:
        """``(direction, since)`` of a change waiting out its delay, or None."""
        return (self._direction, self._since) if self._direction else None

    def decide(
        self,
        now: float,
        current_replicas: int,
        total_load: float,
        waiting_without_replica: int = 0,
    ) -> int:
        """The replica count to aim for; ``current_replicas`` when nothing should change.

        Pass the deployment's current *target* as ``current_replicas`` (not only the replicas
        already running), or replicas that are still starting would be asked for again.
        ``waiting_without_replica`` counts requests queued with no replica to take them (the
        only load there is when the deployment has scaled to zero).
        """
        config = self.config
        load = total_load + waiting_without_replica
        if current_replicas <= 0 and load > 0:
            # Scale from zero at once: requests are waiting and nothing can serve them.
            self._reset()
            return desired_replicas(config, 0, load)
        bounded = _clamp(config, current_replicas)
        if bounded != current_replicas:
            # Outside the bounds (e.g. the config changed): a constraint, not a decision to
            # wait on.
            self._reset()
            return bounded

        desired = desired_replicas(config, current_replicas, load)
        if desired > current_replicas:
            direction, delay_s = 1, config.upscale_delay_s
        elif desired < current_replicas:
            direction, delay_s = -1, config.downscale_delay_s
            if current_replicas > 1:
                # As in Ray, only the last replica may go (1 -> 0), after its own delay:
                # dropping to zero means a cold start for the next request.
                desired = max(1, desired)
        else:
            self._reset()
            return current_replicas

        if direction != self._direction:
            self._direction, self._since = direction, now
        if now - self._since >= delay_s:
            self._reset()
            return desired
        return current_replicas

    def _reset(self) -> None:
        self._direction = 0
        self._since = 0.0
