"""Metric families, their Prometheus text, the user API's checks, and the event log."""

from __future__ import annotations

import pytest

from swell import _context, metrics
from swell._context import ReplicaContext
from swell._controller.events import EventLog
from swell._metrics.core import (
    REGISTRY,
    CounterFamily,
    HistogramFamily,
    Registry,
    family_snapshot,
    merge_texts,
    render,
)
from swell._metrics.process import ProcessMetrics
from tests.metrics_text import parse, total


def test_histogram_buckets_are_cumulative_and_le_is_inclusive() -> None:
    family = HistogramFamily("latency_ms", "help", ("route",), (1, 10))
    for value in (0.5, 1, 5, 10, 11):
        family.observe(("/a",), value)
    samples = parse(render([family.snapshot()]))
    assert total(samples, "latency_ms_bucket", le="1") == 2
    assert total(samples, "latency_ms_bucket", le="10") == 4
    assert total(samples, "latency_ms_bucket", le="+Inf") == 5
    assert total(samples, "latency_ms_count") == 5
    assert total(samples, "latency_ms_sum") == 27.5


def test_same_family_from_many_replicas_renders_one_type_line() -> None:
    one = CounterFamily("requests_total", "help", ("replica",))
    two = CounterFamily("requests_total", "help", ("replica",))
    one.inc(("a",))
    two.inc(("b",), 2)
    text = render([one.snapshot(), two.snapshot()])
    assert text.count("# TYPE requests_total counter") == 1
    assert total(parse(text), "requests_total") == 3


def test_label_values_are_escaped() -> None:
    family = CounterFamily("odd_total", "a \\ help\nline", ("path",))
    family.inc(('say "hi"\\\n',))
    text = render([family.snapshot()])
    assert '\\"hi\\"\\\\\\n' in text
    assert "# HELP odd_total a \\\\ help\\nline" in text
    [(_, _labels, value)] = parse(text)
    assert value == 1


def test_families_of_other_label_sets_still_merge() -> None:
    first = family_snapshot("g", "gauge", "h", ("a",), [(("1",), 1.0)])
    second = family_snapshot("g", "gauge", "h", ("a", "b"), [(("2", "x"), 2.0)])
    samples = parse(render([first, second]))
    assert total(samples, "g") == 3 and total(samples, "g", b="x") == 2


def test_registry_refuses_a_name_reused_with_another_shape() -> None:
    registry = Registry()
    registry.register(CounterFamily("x_total", "", ("a",)))
    assert registry.register(CounterFamily("x_total", "", ("a",))) is registry.families["x_total"]
    with pytest.raises(ValueError, match="already exists as a counter"):
        registry.register(CounterFamily("x_total", "", ("b",)))
    registry.register(HistogramFamily("h", "", (), (1, 2)))
    with pytest.raises(ValueError, match=r"boundaries \[1.0, 2.0\]"):
        registry.register(HistogramFamily("h", "", (), (1, 5)))


def test_user_metrics_are_tagged_with_the_replica_context() -> None:
    counter = metrics.Counter("unit_things", "Things.", tag_keys=("color",))
    counter.set_default_tags({"color": "red"})
    previous = _context._current
    _context.set_replica_context(ReplicaContext("app", "Dep", "Dep-1234", None))
    try:
        counter.inc()
        counter.inc(2, tags={"color": "blue"})
        metrics.Gauge("unit_level").set(7)
        metrics.Histogram("unit_sizes", boundaries=[1, 2]).observe(1.5)
    finally:
        _context._current = previous
    samples = parse(render(REGISTRY.snapshots()))
    auto = {"application": "app", "deployment": "Dep", "replica": "Dep-1234"}
    assert total(samples, "unit_things_total", **auto, color="red") == 1
    assert total(samples, "unit_things_total", **auto, color="blue") == 2
    assert total(samples, "unit_level", **auto) == 7
    assert total(samples, "unit_sizes_bucket", **auto, le="2") == 1


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: metrics.Counter("bad name"), "not a valid Prometheus name"),
        (lambda: metrics.Counter("ok_name", tag_keys=["list"]), "tuple of strings"),
        (lambda: metrics.Counter("ok_name", tag_keys=("replica",)), "set by swell"),
        (lambda: metrics.Histogram("ok_hist"), "needs boundaries"),
        (lambda: metrics.Histogram("ok_hist", boundaries=[2, 1]), "increasing"),
        (lambda: metrics.Counter("ok_c").inc(0), "value > 0"),
        (lambda: metrics.Counter("ok_t", tag_keys=("a",)).inc(), "needs a value for tag 'a'"),
        (lambda: metrics.Counter("ok_u", tag_keys=("a",)).inc(tags={"b": "1"}), "not among"),
    ],
)
def test_user_metric_misuse_is_named(make: object, message: str) -> None:
    assert callable(make)
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_request_counters_derive_from_the_latency_rows() -> None:
    process = ProcessMetrics()
    process.context = ("app", "Dep", "Dep-1")
    process.ongoing = lambda: 3
    for status in (200, 200, 404, 500):
        process.http_done("/p", "GET", status, 0.002)
    process.received_done("predict", False, 0.001)
    samples = parse(render(process.collect()))
    assert total(samples, "ray_serve_num_http_requests_total", status_code="200") == 2
    assert total(samples, "ray_serve_num_http_error_requests_total") == 2
    assert total(samples, "ray_serve_deployment_error_counter_total", route="/p") == 1
    assert total(samples, "ray_serve_deployment_error_counter_total", route="predict") == 1
    assert total(samples, "ray_serve_deployment_request_counter_total") == 5
    assert total(samples, "ray_serve_deployment_processing_latency_ms_count") == 5
    assert total(samples, "ray_serve_replica_processing_queries") == 3


def test_event_log_is_bounded_but_counts_everything() -> None:
    log = EventLog(size=3)
    for index in range(5):
        log.record("replica_died", "app", "Dep", f"#{index}", f"Dep-{index}")
    recent = log.recent()
    assert [event["message"] for event in recent] == ["#4", "#3", "#2"]
    assert log.counts[("app", "Dep", "replica_died")] == 5


def test_texts_of_several_haproxies_merge_into_one_family_each() -> None:
    node = (
        "# HELP haproxy_backend_current_queue Queued requests.\n"
        "# TYPE haproxy_backend_current_queue gauge\n"
        'haproxy_backend_current_queue{proxy="app_a"} 2\n'
        "# HELP haproxy_process_nbthread Threads.\n"
        "# TYPE haproxy_process_nbthread gauge\n"
        "haproxy_process_nbthread 4\n"
    )
    text = merge_texts({"n1": node, "n2": node.replace(" 2\n", " 5\n")}, "node_id")
    samples = parse(text)
    assert text.count("# TYPE haproxy_backend_current_queue gauge") == 1
    assert text.count("# HELP haproxy_process_nbthread") == 1
    assert total(samples, "haproxy_backend_current_queue", node_id="n2", proxy="app_a") == 5
    assert total(samples, "haproxy_backend_current_queue") == 7
    assert total(samples, "haproxy_process_nbthread", node_id="n1") == 4
