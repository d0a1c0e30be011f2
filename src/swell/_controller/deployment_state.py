"""One deployment's replicas as the controller sees them: pure state, no I/O, no clock.

The controller feeds events in (started, ready, failed, died, health results) with the time,
and asks ``plan(now)`` what to do next. Unit tests drive it with a fake clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 30.0
FAILED_AFTER_ATTEMPTS = 3
UNHEALTHY_AFTER_FAILED_CHECKS = 3
# A replica that dies within this long of becoming ready counts towards a crash loop: the
# first such death is replaced at once, the next ones after a growing delay.
STABLE_AFTER_S = 30.0


class ReplicaState(StrEnum):
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    STOPPING = "STOPPING"


class DeploymentStatus(StrEnum):
    DEPLOYING = "DEPLOYING"
    UPDATING = "UPDATING"
    HEALTHY = "HEALTHY"
    UNHEALTHY = "UNHEALTHY"
    DEPLOY_FAILED = "DEPLOY_FAILED"


@dataclass
class ReplicaRecord:
    replica_id: str
    state: ReplicaState
    started_at: float
    address: str | None = None
    control_address: str | None = None
    pid: int | None = None
    ready_at: float = 0.0
    last_health_check_at: float = 0.0
    health_check_in_flight: bool = False
    failed_health_checks: int = 0
    replace: bool = False
    version: str = ""


@dataclass(frozen=True)
class Plan:
    """What to do now: start this many replicas, stop these, health-check those."""

    start: int = 0
    stop: tuple[str, ...] = ()
    check_health: tuple[str, ...] = ()


@dataclass
class DeploymentState:
    name: str
    target: int
    health_check_period_s: float
    replicas: dict[str, ReplicaRecord] = field(default_factory=dict)
    failed_attempts: int = 0
    retry_at: float = 0.0
    last_error: str | None = None
    ever_healthy: bool = False
    version: str = ""
    # Consecutive deaths of replicas that had not stayed up for STABLE_AFTER_S.
    crash_streak: int = 0

    # Events -------------------------------------------------------------------------------

    def on_started(self, replica_id: str, now: float, pid: int | None = None) -> None:
        """A replica of the current target version was launched."""
        self.replicas[replica_id] = ReplicaRecord(
            replica_id, ReplicaState.STARTING, now, pid=pid, version=self.version
        )

    def set_version(self, version: str) -> None:
        """A new code version: replicas of other versions are replaced, rolling."""
        if version != self.version:
            self.version = version
            self.failed_attempts = 0
            self.retry_at = 0.0
            self.last_error = None

    def on_ready(
        self,
        replica_id: str,
        address: str,
        pid: int,
        now: float,
        control_address: str | None = None,
    ) -> None:
        record = self.replicas.get(replica_id)
        if record is None or record.state is not ReplicaState.STARTING:
            return
        record.state = ReplicaState.RUNNING
        record.address = address
        record.control_address = control_address or address
        record.pid = pid
        record.ready_at = now
        record.last_health_check_at = now
        self.failed_attempts = 0
        self.retry_at = 0.0
        if self.running_count() >= self.target:
            self.ever_healthy = True

    def on_start_failed(self, replica_id: str, error: str, now: float) -> None:
        """The constructor raised or the process died first: back off before the next try."""
        self.replicas.pop(replica_id, None)
        self.failed_attempts += 1
        self.last_error = error
        self.retry_at = now + backoff_s(self.failed_attempts)

    def on_died(self, replica_id: str, detail: str, now: float) -> None:
        """A replica that was running exited on its own: replace it, with backoff if it crash
        loops (a replacement that dies soon after starting waits longer each time)."""
        record = self.replicas.pop(replica_id, None)
        if record is None:
            return
        self.last_error = detail
        if now - record.ready_at >= STABLE_AFTER_S:
            self.crash_streak = 0
        self.crash_streak += 1
        if self.crash_streak > 1:
            self.retry_at = max(self.retry_at, now + backoff_s(self.crash_streak - 1))

    def on_stopping(self, replica_id: str) -> None:
        """Being stopped on purpose (scaled down, replaced, deleted): no longer wanted."""
        record = self.replicas.get(replica_id)
        if record is not None:
            record.state = ReplicaState.STOPPING

    def on_stopped(self, replica_id: str) -> None:
        self.replicas.pop(replica_id, None)

    def on_health_check_started(self, replica_id: str, now: float) -> None:
        record = self.replicas.get(replica_id)
        if record is not None:
            record.health_check_in_flight = True
            record.last_health_check_at = now

    def on_health_result(self, replica_id: str, ok: bool, detail: str = "") -> None:
        record = self.replicas.get(replica_id)
        if record is None:
            return
        record.health_check_in_flight = False
        if ok:
            record.failed_health_checks = 0
            return
        record.failed_health_checks += 1
        if record.failed_health_checks >= UNHEALTHY_AFTER_FAILED_CHECKS:
            record.replace = True
            self.last_error = f"replica {replica_id} failed its health check: {detail}"

    # Decisions ----------------------------------------------------------------------------

    def running_count(self) -> int:
        return sum(
            1
            for r in self.replicas.values()
            if r.state is ReplicaState.RUNNING and r.version == self.version
        )

    def has_old_versions(self) -> bool:
        return any(
            r.version != self.version and r.state is not ReplicaState.STOPPING
            for r in self.replicas.values()
        )

    def plan(self, now: float) -> Plan:
        if self.running_count() >= self.target > 0:
            self.ever_healthy = True
        stop = [
            r.replica_id
            for r in self.replicas.values()
            if r.replace and r.state is not ReplicaState.STOPPING
        ]
        serving = [
            r
            for r in self.replicas.values()
            if r.state is not ReplicaState.STOPPING and not r.replace
        ]
        live = [r for r in serving if r.version == self.version]
        stop += self._retire_old_versions(serving, live)
        start = 0
        if len(live) < self.target:
            if now >= self.retry_at:
                # While a constructor keeps failing, try one replica at a time.
                start = self.target - len(live) if self.failed_attempts == 0 else 1
                if self.failed_attempts and any(r.state is ReplicaState.STARTING for r in live):
                    start = 0
        elif len(live) > self.target:
            # Stop replicas that are not serving yet first, then the newest.
            surplus = sorted(live, key=lambda r: (r.state is ReplicaState.RUNNING, -r.started_at))
            stop += [r.replica_id for r in surplus[: len(live) - self.target]]
        check = tuple(
            r.replica_id
            for r in serving
            if r.state is ReplicaState.RUNNING
            and not r.health_check_in_flight
            and now - r.last_health_check_at >= self.health_check_period_s
        )
        return Plan(start=start, stop=tuple(stop), check_health=check)

    def _retire_old_versions(
        self, serving: list[ReplicaRecord], current: list[ReplicaRecord]
    ) -> list[str]:
        """Old-version replicas to stop now: one for each current-version replica that is up.

        Until the new version runs, the old one keeps serving, so an update that cannot
        become healthy never takes capacity away.
        """
        old = [r for r in serving if r.version != self.version]
        if not old:
            return []
        retire = [r.replica_id for r in old if r.state is ReplicaState.STARTING]
        old_running = [r for r in old if r.state is ReplicaState.RUNNING]
        current_running = sum(1 for r in current if r.state is ReplicaState.RUNNING)
        excess = len(old_running) + current_running - self.target
        if self.target == 0:
            excess = len(old_running)
        old_running.sort(key=lambda r: r.started_at)
        retire += [r.replica_id for r in old_running[: max(0, excess)]]
        return retire

    def status(self) -> tuple[DeploymentStatus, str]:
        running = self.running_count()
        old = self.has_old_versions()
        if (
            running >= self.target
            and not old
            and not any(r.state is ReplicaState.STARTING for r in self.replicas.values())
        ):
            return DeploymentStatus.HEALTHY, ""
        message = self.last_error or ""
        if old and self.failed_attempts >= FAILED_AFTER_ATTEMPTS:
            return DeploymentStatus.DEPLOY_FAILED, (
                f"the update cannot become healthy ({self.failed_attempts} failed attempts); "
                f"the previous version keeps serving. Last error:\n{message}"
            )
        if old:
            return DeploymentStatus.UPDATING, message
        if running == 0 and self.failed_attempts >= FAILED_AFTER_ATTEMPTS:
            return DeploymentStatus.DEPLOY_FAILED, (
                f"{self.failed_attempts} attempts to start a replica failed; retrying with "
                f"backoff. Last error:\n{message}"
            )
        if self.ever_healthy:
            return DeploymentStatus.UNHEALTHY, message
        return DeploymentStatus.DEPLOYING, message

    def replica_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.replicas.values():
            counts[record.state.value] = counts.get(record.state.value, 0) + 1
        return counts


def backoff_s(attempts: int) -> float:
    """1 s, 2 s, 4 s, ... up to BACKOFF_MAX_S, after ``attempts`` failures in a row."""
    doublings = min(max(attempts, 1) - 1, 32)  # past the cap anyway; no overflow
    return float(min(BACKOFF_BASE_S * 2**doublings, BACKOFF_MAX_S))
