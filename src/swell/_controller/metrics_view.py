"""The controller's state as metric families, built when the node's endpoint is scraped."""

from __future__ import annotations

from collections.abc import Iterable

from swell._controller import events as ev
from swell._controller.deployment_state import ReplicaState
from swell._controller.model import AppRuntime
from swell._controller.status_view import app_status
from swell._metrics.core import HistogramFamily, Snapshot, family_snapshot

DEPLOY_BUCKETS_S = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


def deploy_duration_family() -> HistogramFamily:
    return HistogramFamily(
        "swell_deploy_duration_s",
        "Time from a deploy request until the application was RUNNING (s).",
        ("application",),
        DEPLOY_BUCKETS_S,
    )


def controller_snapshots(
    apps: Iterable[AppRuntime], events: ev.EventLog, deploys: HistogramFamily
) -> list[Snapshot]:
    dep = ("application", "deployment")
    healthy: list[tuple[tuple[str, ...], float]] = []
    by_state: list[tuple[tuple[str, ...], float]] = []
    targets: list[tuple[tuple[str, ...], float]] = []
    autoscaled: list[tuple[tuple[str, ...], float]] = []
    statuses: list[tuple[tuple[str, ...], float]] = []
    app_statuses: list[tuple[tuple[str, ...], float]] = []
    for app in apps:
        app_statuses.append(((app.name, app_status(app)), 1.0))
        for name, deployment in app.deployments.items():
            state = deployment.state
            for record in state.replicas.values():
                running = record.state is ReplicaState.RUNNING
                healthy.append(((app.name, name, record.replica_id), 1.0 if running else 0.0))
            for replica_state, count in state.replica_counts().items():
                by_state.append(((app.name, name, replica_state), float(count)))
            targets.append(((app.name, name), float(state.target)))
            if deployment.autoscaler is not None:
                autoscaled.append(((app.name, name), float(state.target)))
            statuses.append(((app.name, name, state.status()[0].value), 1.0))

    def counted(kind: str) -> list[tuple[tuple[str, ...], float]]:
        return [((a, d), float(n)) for (a, d, k), n in events.counts.items() if k == kind]

    failures = [
        ((a, d, k), float(n))
        for (a, d, k), n in events.counts.items()
        if k in (ev.REPLICA_START_FAILED, ev.REPLICA_DIED, ev.HEALTH_CHECK_FAILED)
    ]
    return [
        family_snapshot(
            "ray_serve_deployment_replica_healthy",
            "gauge",
            "1 for each replica that is RUNNING (healthy), 0 for one that is not yet or no more.",
            (*dep, "replica"),
            healthy,
        ),
        family_snapshot(
            "swell_deployment_replicas",
            "gauge",
            "Replicas per deployment, by state.",
            (*dep, "state"),
            by_state,
        ),
        family_snapshot(
            "swell_deployment_target_replicas",
            "gauge",
            "The replica count each deployment is driven towards.",
            dep,
            targets,
        ),
        family_snapshot(
            "ray_serve_autoscaling_target_replicas",
            "gauge",
            "The autoscaler's target replica count (autoscaled deployments only).",
            dep,
            autoscaled,
        ),
        family_snapshot(
            "swell_deployment_status",
            "gauge",
            "1 for each deployment's current status.",
            (*dep, "status"),
            statuses,
        ),
        family_snapshot(
            "swell_application_status",
            "gauge",
            "1 for each application's current status.",
            ("application", "status"),
            app_statuses,
        ),
        family_snapshot(
            "ray_serve_deployment_replica_starts_total",
            "counter",
            "Replicas that started and became RUNNING.",
            dep,
            counted(ev.REPLICA_RUNNING),
        ),
        family_snapshot(
            "ray_serve_health_check_failures_total",
            "counter",
            "Failed health checks of replicas.",
            dep,
            counted(ev.HEALTH_CHECK_FAILED),
        ),
        family_snapshot(
            "swell_replica_failures_total",
            "counter",
            "Replica failures by reason: failed to start, died, failed a health check.",
            (*dep, "reason"),
            failures,
        ),
        family_snapshot(
            "swell_autoscaling_decisions_total",
            "counter",
            "Times the autoscaler changed a deployment's target replica count.",
            dep,
            counted(ev.AUTOSCALED),
        ),
        deploys.snapshot(),
    ]
