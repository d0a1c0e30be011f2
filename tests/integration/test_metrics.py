"""The node's Prometheus endpoint, scraped while a known, bounded load runs.

Real HAProxy (both supported binaries), real replica processes, a real HTTP client: every
request the test sends must be counted once, by status code, in the replicas' families, in
HAProxy's own, and in the user's metrics (auto-tagged with deployment, replica, application).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import swell
from swell import api, cli
from swell._controller.admin_api import view_token
from tests.integration import metrics_apps
from tests.integration.conftest import free_port, haproxy_binaries
from tests.metrics_text import Sample, parse, series, total

APP = "metrics_app"
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "swell-dashboard.json"
SENT = {"ok": 24, "missing": 5, "boom": 4}
STATUS = {"ok": "200", "missing": "404", "boom": "500"}


@pytest.fixture(params=haproxy_binaries())
def instance(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    """(ingress URL, admin URL, admin token) of a started instance serving the metrics app."""
    port = free_port()
    swell.start(
        http_options={"host": "127.0.0.1", "port": port, "haproxy_binary": request.param},
        admin_port=0,
    )
    try:
        swell.run(metrics_apps.app, name=APP, route_prefix="/m")
        assert api._instance is not None
        admin = f"http://127.0.0.1:{swell.status().raw['admin_port']}"
        yield f"http://127.0.0.1:{port}", admin, api._instance.admin_token
    finally:
        swell.shutdown()


def _send_load(url: str, errors: list[BaseException]) -> None:
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            for kind, count in SENT.items():
                for _ in range(count):
                    response = client.get(f"/m/{kind}")
                    assert response.status_code == int(STATUS[kind]), response.text
    except BaseException as error:  # reported by the test thread
        errors.append(error)


def _scrape_text(admin: str, token: str) -> str:
    response = httpx.get(
        f"{admin}/metrics", headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def _scrape(admin: str, token: str) -> list[Sample]:
    return parse(_scrape_text(admin, token))


def test_scrape_counts_every_request_once(instance: tuple[str, str, str]) -> None:
    url, admin, admin_token = instance
    token = view_token(admin_token)  # what Prometheus is given: read-only
    errors: list[BaseException] = []
    load = threading.Thread(target=_send_load, args=(url, errors), name="metrics-load")
    load.start()
    # Scrapes during the load: valid text every time, and counts that never go backwards
    # nor past what was sent.
    previous = 0.0
    scrapes = 0
    while load.is_alive() or scrapes == 0:
        counted = total(_scrape(admin, token), "ray_serve_num_http_requests_total")
        assert previous <= counted <= sum(SENT.values())
        previous = counted
        scrapes += 1
    load.join(timeout=60)
    assert not load.is_alive() and not errors, errors

    text = _scrape_text(admin, token)
    samples = parse(text)
    front = {"application": APP, "deployment": "Front"}
    for kind, count in SENT.items():
        code = STATUS[kind]
        assert total(samples, "ray_serve_num_http_requests_total", **front, status_code=code) == (
            count
        ), kind
        assert (
            total(samples, "ray_serve_http_request_latency_ms_count", **front, status_code=code)
            == count
        ), kind
    errors_counted = total(samples, "ray_serve_num_http_error_requests_total", **front)
    assert errors_counted == SENT["missing"] + SENT["boom"]
    assert total(samples, "ray_serve_deployment_error_counter_total", **front) == SENT["boom"]
    assert total(samples, "ray_serve_deployment_request_counter_total", **front) == sum(
        SENT.values()
    )
    _check_histograms(samples, "ray_serve_http_request_latency_ms")
    _check_histograms(samples, "ray_serve_deployment_processing_latency_ms")

    # Handle calls, made by Front and served by Model.
    calls = SENT["ok"]
    made = {"caller_deployment": "Front", "deployment": "Model", "application": APP}
    assert total(samples, "ray_serve_handle_request_counter_total", **made) == calls
    assert total(samples, "swell_handle_call_latency_ms_count", **made, outcome="ok") == calls
    assert series(samples, "ray_serve_deployment_queued_queries", **made)
    assert total(samples, "ray_serve_deployment_queued_queries", **made) == 0
    served = {"application": APP, "deployment": "Model", "method": "predict", "outcome": "ok"}
    assert total(samples, "swell_handle_calls_received_latency_ms_count", **served) == calls
    model = {"application": APP, "deployment": "Model"}
    assert total(samples, "ray_serve_actual_batch_size_sum", **model) == calls
    assert total(samples, "ray_serve_batches_processed_total", **model) >= 1

    # User metrics, tagged with where they were recorded.
    front_series = series(samples, "front_requests_total", **front)
    assert {labels["kind"] for labels in front_series} == set(SENT)
    assert all(labels["replica"].startswith("Front-") for labels in front_series)
    assert total(samples, "front_requests_total", **front, kind="ok") == SENT["ok"]
    assert total(samples, "model_calls_total", **model, kind="predict") == calls
    assert total(samples, "model_input_size_count", **model) == calls
    assert total(samples, "model_input_size_bucket", **model, le="1") == 0
    assert total(samples, "model_input_size_bucket", **model, le="10") == calls
    assert total(samples, "front_last_value", **front) == 6

    # The controller's view.
    assert total(samples, "swell_deployment_target_replicas", **model) == 1
    assert total(samples, "ray_serve_deployment_replica_healthy", **model) == 1
    assert total(samples, "ray_serve_deployment_replica_starts_total", **model) == 1
    assert total(samples, "swell_application_status", application=APP, status="RUNNING") == 1
    assert total(samples, "swell_replica_scrape_up") == 2

    # HAProxy's own exporter: the app's backend saw every request, by class of status.
    assert total(samples, "swell_haproxy_exporter_up") == 1
    backend = {"proxy": f"app_{APP}"}
    assert series(samples, "haproxy_backend_current_queue", **backend)
    responses = "haproxy_backend_http_responses_total"
    assert total(samples, responses, **backend, code="2xx") == SENT["ok"]
    assert total(samples, responses, **backend, code="4xx") == SENT["missing"]
    assert total(samples, responses, **backend, code="5xx") == SENT["boom"]

    # Every family the shipped Grafana dashboard queries is one this scrape has.
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    queried = set(re.findall(r"\b((?:ray_serve|swell|haproxy)_[a-z_]+)", " ".join(exprs)))
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in queried}
    missing = sorted(name for name in families if f"# TYPE {name} " not in text)
    assert missing == []


def _check_histograms(samples: list[Sample], name: str) -> None:
    """Buckets are cumulative and end at the count; the count matches the series."""
    counts = [(labels, value) for n, labels, value in samples if n == f"{name}_count"]
    assert counts
    for labels, count in counts:
        buckets = sorted(
            (
                (float(bl["le"]), value)
                for n, bl, value in samples
                if n == f"{name}_bucket" and {k: v for k, v in bl.items() if k != "le"} == labels
            ),
        )
        values = [value for _, value in buckets]
        assert values == sorted(values), f"{name} buckets are not cumulative: {values}"
        assert buckets[-1] == (float("inf"), count)


def test_metrics_need_a_token_and_the_view_token_only_reads(
    instance: tuple[str, str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, admin, admin_token = instance
    # What Prometheus is given: `swell dashboard --scrape-token`.
    token_file = tmp_path / "admin.token"
    token_file.write_text(admin_token)
    token_file.chmod(0o600)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli.main(["dashboard", "-a", admin, "--token-file", str(token_file), "--scrape-token"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out.strip()
    assert printed == view_token(admin_token) != admin_token
    view = {"authorization": f"Bearer {printed}"}
    assert httpx.get(f"{admin}/metrics", timeout=30).status_code == 401
    assert httpx.get(f"{admin}/metrics", headers=view, timeout=30).status_code == 200
    admin_header = {"authorization": f"Bearer {admin_token}"}
    assert httpx.get(f"{admin}/metrics", headers=admin_header, timeout=30).status_code == 200
    # The view token changes nothing and reads nothing else.
    applications = f"{admin}/api/serve/applications/"
    assert httpx.get(applications, headers=view, timeout=30).status_code == 401
    assert httpx.delete(applications, headers=view, timeout=30).status_code == 401
    assert httpx.post(f"{admin}/api/swell/shutdown", headers=view, timeout=30).status_code == 401
    data = httpx.get(f"{admin}/api/swell/dashboard", headers=view, timeout=30)
    assert data.status_code == 200
    # What the page needs, not the configs (a user_config may hold secrets).
    front = data.json()["applications"][APP]["deployments"]["Front"]
    assert front["replica_states"] == {"RUNNING": 1} and "deployment_config" not in front
    assert httpx.get(f"{admin}/api/swell/dashboard", timeout=30).status_code == 401
