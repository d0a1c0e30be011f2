"""The built-in metrics of one process: HTTP requests, handle calls made and received, batches.

The hot path only adds to a histogram row found by a small tuple key (one dict lookup, one
bisect, three additions). Counters that Ray Serve exports separately (requests, errors) are
derived from those rows when scraped, so a request pays for one histogram, not four families.
Names follow Ray Serve's where the meaning matches (see docs/observability.md).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from typing import Any

from swell._metrics.core import (
    LATENCY_BUCKETS_MS,
    REGISTRY,
    Snapshot,
    family_snapshot,
    new_row,
)

# Batch sizes: powers of two up to what @batch users set in practice.
BATCH_SIZE_BUCKETS: tuple[float, ...] = (
    1.0,
    2.0,
    4.0,
    8.0,
    16.0,
    32.0,
    64.0,
    128.0,
    256.0,
    512.0,
    1024.0,
)

_REPLICA = ("application", "deployment", "replica")
_Row = list[float]


def _add(rows: dict[Any, _Row], key: Any, value: float, bounds: tuple[float, ...]) -> None:
    """Count ``value`` in its bucket and add it to the sum; the count (the row's last item)
    is left for the scrape to fill in (``_completed``): one store less per request."""
    row = rows.get(key)
    if row is None:
        row = rows[key] = new_row(bounds)
    row[bisect.bisect_left(bounds, value)] += 1
    row[-2] += value


def _completed(rows: dict[Any, _Row]) -> list[tuple[Any, _Row]]:
    """Copies of the rows with their count set: the sum of their buckets."""
    done = []
    for key, row in list(rows.items()):
        copy = list(row)
        copy[-1] = sum(copy[:-2])
        done.append((key, copy))
    return done


def _sum_rows(rows: list[_Row]) -> _Row:
    return [sum(column) for column in zip(*rows, strict=True)]


class ProcessMetrics:
    """Counters and histograms of this process; the replica sets ``context`` at start."""

    def __init__(self) -> None:
        # (application, deployment, replica) this process serves; empty outside replicas.
        self.context: tuple[str, str, str] = ("", "", "")
        # (route, method, status) -> latency row (ms).
        self.http: dict[tuple[str, str, int], _Row] = {}
        # Handle calls this replica served: (method, ok) -> latency row (ms).
        self.received: dict[tuple[str, bool], _Row] = {}
        # Handle calls this process made: (application, deployment, ok) -> latency row (ms).
        self.calls: dict[tuple[str, str, bool], _Row] = {}
        # @batch: function -> batch size row.
        self.batches: dict[str, _Row] = {}
        # Requests and handle calls running now (set by the replica).
        self.ongoing: Callable[[], int] | None = None
        # Handle calls waiting in this process's routers, per (application, deployment).
        self.queued: Callable[[], dict[tuple[str, str], int]] | None = None

    # The hot path -------------------------------------------------------------------------

    def http_done(self, route: str, method: str, status: int, seconds: float) -> None:
        # _add() inlined: this runs once per HTTP request.
        key = (route, method, status)
        row = self.http.get(key)
        if row is None:
            row = self.http[key] = new_row(LATENCY_BUCKETS_MS)
        ms = seconds * 1000.0
        row[bisect.bisect_left(LATENCY_BUCKETS_MS, ms)] += 1
        row[-2] += ms

    def received_done(self, method: str, ok: bool, seconds: float) -> None:
        _add(self.received, (method, ok), seconds * 1000.0, LATENCY_BUCKETS_MS)

    def call_done(self, application: str, deployment: str, ok: bool, seconds: float) -> None:
        _add(self.calls, (application, deployment, ok), seconds * 1000.0, LATENCY_BUCKETS_MS)

    def batch_formed(self, function: str, size: int) -> None:
        _add(self.batches, function, float(size), BATCH_SIZE_BUCKETS)

    # Scrape -------------------------------------------------------------------------------

    def collect(self) -> list[Snapshot]:
        """The families Ray Serve's dashboards query, built from the rows above."""
        ctx = self.context
        http = _completed(self.http)
        received = _completed(self.received)
        out: list[Snapshot] = []
        if ctx[0] or http:
            out += self._http_families(ctx, http)
        if ctx[0]:
            out += self._deployment_families(ctx, http, received)
        out += self._call_families(ctx)
        batches = _completed(self.batches)
        if batches:
            out.append(
                family_snapshot(
                    "ray_serve_actual_batch_size",
                    "histogram",
                    "The size of each batch an @batch function ran.",
                    (*_REPLICA, "function_name"),
                    [((*ctx, name), row) for name, row in batches],
                    BATCH_SIZE_BUCKETS,
                )
            )
            out.append(
                family_snapshot(
                    "ray_serve_batches_processed_total",
                    "counter",
                    "The number of batches an @batch function ran.",
                    (*_REPLICA, "function_name"),
                    [((*ctx, name), row[-1]) for name, row in batches],
                )
            )
        return out

    @staticmethod
    def _http_families(
        ctx: tuple[str, str, str], http: list[tuple[tuple[str, str, int], _Row]]
    ) -> list[Snapshot]:
        labels = (*_REPLICA, "route", "method", "status_code")
        error_labels = (*_REPLICA, "route", "method", "error_code")
        errors = [((*ctx, r, m, str(s)), row[-1]) for (r, m, s), row in http if s >= 400]
        return [
            family_snapshot(
                "ray_serve_num_http_requests_total",
                "counter",
                "HTTP requests answered by this ingress replica, by status code.",
                labels,
                [((*ctx, r, m, str(s)), row[-1]) for (r, m, s), row in http],
            ),
            family_snapshot(
                "ray_serve_num_http_error_requests_total",
                "counter",
                "HTTP requests answered with a status of 400 or more.",
                error_labels,
                errors,
            ),
            family_snapshot(
                "ray_serve_num_deployment_http_error_requests_total",
                "counter",
                "HTTP requests answered with a status of 400 or more, per deployment.",
                error_labels,
                errors,
            ),
            family_snapshot(
                "ray_serve_http_request_latency_ms",
                "histogram",
                "Time from the request reaching the replica to its response's end (ms).",
                labels,
                [((*ctx, r, m, str(s)), list(row)) for (r, m, s), row in http],
                LATENCY_BUCKETS_MS,
            ),
        ]

    def _deployment_families(
        self,
        ctx: tuple[str, str, str],
        http: list[tuple[tuple[str, str, int], _Row]],
        received: list[tuple[tuple[str, bool], _Row]],
    ) -> list[Snapshot]:
        # Per route: HTTP by route prefix, handle calls by method name.
        by_route: dict[str, list[_Row]] = {}
        failed: dict[str, float] = {}
        for (route, _, status), row in http:
            by_route.setdefault(route, []).append(row)
            failed[route] = failed.get(route, 0.0) + (row[-1] if status >= 500 else 0.0)
        for (method, ok), row in received:
            by_route.setdefault(method, []).append(row)
            failed[method] = failed.get(method, 0.0) + (0.0 if ok else row[-1])
        totals = {route: _sum_rows(rows) for route, rows in by_route.items()}
        labels = (*_REPLICA, "route")
        ongoing = self.ongoing() if self.ongoing is not None else 0
        return [
            family_snapshot(
                "ray_serve_deployment_request_counter_total",
                "counter",
                "Requests and handle calls this replica processed (route: the HTTP route "
                "prefix, or the method a handle called).",
                labels,
                [((*ctx, route), row[-1]) for route, row in totals.items()],
            ),
            family_snapshot(
                "ray_serve_deployment_error_counter_total",
                "counter",
                "Requests answered 5xx and handle calls that raised, on this replica.",
                labels,
                [((*ctx, route), count) for route, count in failed.items()],
            ),
            family_snapshot(
                "ray_serve_deployment_processing_latency_ms",
                "histogram",
                "Time this replica spent on a request or handle call (ms).",
                labels,
                [((*ctx, route), row) for route, row in totals.items()],
                LATENCY_BUCKETS_MS,
            ),
            family_snapshot(
                "ray_serve_replica_processing_queries",
                "gauge",
                "Requests and handle calls running on this replica now.",
                _REPLICA,
                [(ctx, float(ongoing))],
            ),
            family_snapshot(
                "swell_handle_calls_received_latency_ms",
                "histogram",
                "Handle calls this replica served, by method and outcome (ms).",
                (*_REPLICA, "method", "outcome"),
                [((*ctx, m, "ok" if ok else "error"), list(row)) for (m, ok), row in received],
                LATENCY_BUCKETS_MS,
            ),
        ]

    def _call_families(self, ctx: tuple[str, str, str]) -> list[Snapshot]:
        calls = _completed(self.calls)
        if not calls:
            return []
        labels = ("caller_application", "caller_deployment", "caller_replica")
        target = ("application", "deployment")
        queued = self.queued() if self.queued is not None else {}
        counts: dict[tuple[str, ...], float] = {}
        for (app, dep, _), row in calls:
            counts[(*ctx, app, dep)] = counts.get((*ctx, app, dep), 0.0) + row[-1]
        return [
            family_snapshot(
                "ray_serve_deployment_queued_queries",
                "gauge",
                "Handle calls from this process waiting for a replica with room.",
                (*labels, *target),
                [((*ctx, app, dep), float(n)) for (app, dep), n in queued.items()],
            ),
            family_snapshot(
                "ray_serve_handle_request_counter_total",
                "counter",
                "Handle calls made from this process, by target deployment.",
                (*labels, *target),
                list(counts.items()),
            ),
            family_snapshot(
                "swell_handle_call_latency_ms",
                "histogram",
                "Handle calls made from this process, caller-side latency by outcome (ms).",
                (*labels, *target, "outcome"),
                [
                    ((*ctx, app, dep, "ok" if ok else "error"), list(row))
                    for (app, dep, ok), row in calls
                ],
                LATENCY_BUCKETS_MS,
            ),
        ]


PROCESS = ProcessMetrics()
REGISTRY.collectors.append(PROCESS.collect)
