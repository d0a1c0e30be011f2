"""What the admin API's ``/metrics`` and the status page's data endpoint answer.

One scrape gathers, in parallel and each with a deadline: the controller's families (replica
states, targets, events), every RUNNING replica's families (its control port), this process's
own (handle calls and user metrics from the driver), and HAProxy's exporter. Replica families
merge into one exposition; HAProxy's text (``haproxy_*``, no name shared) is appended as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from swell._controller.controller import Controller
from swell._ingress import haproxy_exporter
from swell._metrics.core import LATENCY_BUCKETS_MS, REGISTRY, Snapshot, family_snapshot, render
from swell._protocol import BACKEND_QUEUE

SCRAPE_TIMEOUT_S = 3.0


async def _haproxy_text(ingress: Any) -> str | None:
    """This node's HAProxy exporter; on Ray, every node's, tagged with ``node_id``."""
    fleet_metrics = getattr(ingress, "haproxy_metrics", None)
    if fleet_metrics is not None:
        text: str | None = await fleet_metrics(SCRAPE_TIMEOUT_S)
        return text
    socket_path = getattr(ingress, "metrics_socket", None)
    if not isinstance(socket_path, str):
        return None
    return await haproxy_exporter.scrape(socket_path, SCRAPE_TIMEOUT_S)


async def metrics_text(controller: Controller, ingress: Any) -> str:
    """The node's Prometheus exposition (text format 0.0.4)."""
    replicas, haproxy = await asyncio.gather(
        controller.replica_metric_snapshots(SCRAPE_TIMEOUT_S), _haproxy_text(ingress)
    )
    up = family_snapshot(
        "swell_haproxy_exporter_up",
        "gauge",
        "1 if HAProxy's own exporter answered this scrape (its haproxy_* families follow).",
        (),
        [((), 0.0 if haproxy is None else 1.0)],
    )
    text = render([*controller.metric_snapshots(), *replicas, *REGISTRY.snapshots(), up])
    if haproxy:
        text += haproxy if haproxy.endswith("\n") else haproxy + "\n"
    return text


def _per_deployment(snapshots: list[Snapshot]) -> dict[str, dict[str, Any]]:
    """Cumulative requests, errors and latency buckets per ``app/deployment``."""
    out: dict[str, dict[str, Any]] = {}

    def entry(labels: list[str], values: list[str]) -> dict[str, Any]:
        found = dict(zip(labels, values, strict=True))
        key = f"{found.get('application', '')}/{found.get('deployment', '')}"
        return out.setdefault(
            key,
            {
                "requests": 0.0,
                "errors": 0.0,
                "latency_buckets": [0.0] * (len(LATENCY_BUCKETS_MS) + 1),
            },
        )

    for family in snapshots:
        name, labels = family["name"], family["labels"]
        for values, value in family["series"]:
            if name == "ray_serve_deployment_request_counter_total":
                entry(labels, values)["requests"] += value
            elif name == "ray_serve_deployment_error_counter_total":
                entry(labels, values)["errors"] += value
            elif name == "ray_serve_deployment_processing_latency_ms":
                buckets = entry(labels, values)["latency_buckets"]
                for index, count in enumerate(value[: len(buckets)]):
                    buckets[index] += count
    return out


def _without_configs(applications: dict[str, Any]) -> dict[str, Any]:
    """The status without each deployment's config: a ``user_config`` may hold secrets, and
    the view token is for looking, not for reading configuration."""
    shown: dict[str, Any] = {}
    for name, app in applications.items():
        deployments = {
            dep_name: {k: v for k, v in dep.items() if k != "deployment_config"}
            for dep_name, dep in app.get("deployments", {}).items()
        }
        shown[name] = {**app, "deployments": deployments}
    return shown


async def dashboard_document(
    controller: Controller, ingress: Any, status: dict[str, Any]
) -> dict[str, Any]:
    """What the status page polls: the status document plus counters it turns into rates."""
    replicas = await controller.replica_metric_snapshots(SCRAPE_TIMEOUT_S)
    queues: dict[str, int] = {}
    for app_name in controller.app_names():
        with contextlib.suppress(Exception):
            sessions = await asyncio.wait_for(ingress.sessions(app_name), SCRAPE_TIMEOUT_S)
            queues[app_name] = int(sessions.get(BACKEND_QUEUE, 0))
    return {
        "time": time.time(),
        "applications": _without_configs(status.get("applications", {})),
        "proxies": status.get("proxies", {}),
        "deployments": _per_deployment(replicas),
        "latency_bounds_ms": list(LATENCY_BUCKETS_MS),
        "haproxy_queues": queues,
        "events": controller.events.recent(50),
    }
