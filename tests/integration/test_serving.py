"""Serving through the real HAProxy and real replica processes."""

from __future__ import annotations

import os
import signal
import socket
import threading
from pathlib import Path

import httpx
import pytest

import swell
from tests.integration import apps
from tests.integration.conftest import (
    Swell,
    children_of,
    haproxy_binaries,
    pid_alive,
    replica_stats,
    started_pids,
    wait_until,
)


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_both_replicas_answer_behind_each_haproxy(serve: Swell) -> None:
    swell.run(apps.whoami_app)
    seen = set()
    for _ in range(60):
        response = serve.client.get("/anything")
        assert response.status_code == 200
        body = response.json()
        assert body["message"] == "Hello?"
        seen.add(body["replica"])
    assert len(seen) == 2
    assert serve.client.get("/-/healthz").text == "success"
    assert serve.client.get("/-/routes").json() == {"/": "default"}
    # The replicas' control paths are not on the user port: the user's code answers them.
    assert serve.client.get("/-/swell/stats").json()["message"] == "Hello?"
    # Paths under /-/ other than HAProxy's own two belong to the application.
    assert serve.client.get("/-/mine").json()["path"] == "/-/mine"


def test_two_apps_on_two_prefixes(serve: Swell) -> None:
    swell.run(apps.whoami_app, name="root", route_prefix="/")
    swell.run(apps.text_app, name="text", route_prefix="/text")
    assert httpx.get(serve.url + "/-/routes").json() == {"/": "root", "/text": "text"}
    assert serve.client.get("/text/a/b").text == "text at /text/a/b"
    assert serve.client.get("/text").text == "text at /text"
    # A longer path that only starts with the same letters is not the /text app's.
    assert serve.client.get("/textbook").json()["path"] == "/textbook"
    assert serve.client.get("/other").json()["message"] == "Hello?"
    with pytest.raises(swell.ConfigError, match="already served by application 'text'"):
        swell.run(apps.whoami_app, name="clash", route_prefix="/text")
    assert serve.client.get("/text/a/b").text == "text at /text/a/b"
    swell.delete("text")
    # A route change reloads HAProxy hitlessly: a kept-alive connection may get one more
    # answer from the old worker, so look through new connections.
    assert httpx.get(serve.url + "/-/routes").json() == {"/": "root"}
    assert httpx.get(serve.url + "/text/a").json()["path"] == "/text/a"


def test_route_prefix_is_the_root_path(serve: Swell) -> None:
    swell.run(apps.whoami_app, name="api", route_prefix="/api")
    body = serve.client.get("/api/v1/x").json()
    assert body["path"] == "/api/v1/x"
    assert body["root_path"] == "/api"
    assert serve.client.get("/elsewhere").status_code == 404


def test_streaming_response_arrives_chunk_by_chunk(serve: Swell, tmp_path: Path) -> None:
    swell.run(apps.stream_app)
    gate = tmp_path / "gate"
    received = []
    with serve.client.stream("GET", "/", params={"gate": str(gate), "n": 4}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            received.append(line)
            # Only after seeing chunk i does the client allow chunk i+1 to be produced.
            Path(f"{gate}.{len(received)}").touch()
    assert received == ["chunk 0", "chunk 1", "chunk 2", "chunk 3"]


def test_a_stream_stops_when_its_client_goes_away(serve: Swell, tmp_path: Path) -> None:
    """The replica tells a StreamingResponse ASGI 2.4 (no listener task per response): the
    generator is still stopped, by the disconnect watcher, once the client leaves."""
    swell.run(apps.endless_stream_app)
    marker = tmp_path / "stream"
    with socket.create_connection(("127.0.0.1", serve.port), timeout=10) as client:
        client.sendall(f"GET /?marker={marker} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        assert client.recv(4096).startswith(b"HTTP/1.1 200")
        wait_until(marker.exists, 30, "the stream to start")
    wait_until(Path(f"{marker}.stopped").exists, 30, "the generator to be stopped")


def test_a_replica_freezes_what_it_built_at_startup(serve: Swell) -> None:
    # A full collection then scans only what requests made: swell's imports alone froze
    # ~60k objects here (about 11 ms a collection); the user's model would add more.
    swell.run(apps.gc_state_app)
    assert serve.client.get("/").json()["frozen"] > 10_000


def test_sync_methods_run_off_the_event_loop(serve: Swell) -> None:
    swell.run(apps.sync_app)
    results: dict[str, str] = {}

    def waiter() -> None:
        results["wait"] = serve.client.get("/", params={"role": "wait"}).text

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: _ongoing(serve) >= 1, 10, "the waiting request to reach the replica")
    assert serve.client.get("/", params={"role": "release"}).text == "released"
    thread.join(15)
    assert results["wait"] == "woken"


def _ongoing(serve: Swell) -> int:
    status = swell.status().raw
    replica = status["applications"]["default"]["deployments"]["SyncBlocking"]["replicas"][0]
    return replica_stats(replica["control_address"])["ongoing"]


def test_return_types_user_config_and_health_checks(serve: Swell) -> None:
    swell.run(apps.configured_app)
    assert serve.client.get("/").json()["threshold"] == 3
    raw = serve.client.get("/", params={"kind": "bytes"})
    assert raw.content == b"\x00\x01raw"
    assert raw.headers["content-type"] == "application/octet-stream"
    teapot = serve.client.get("/", params={"kind": "response"})
    assert (teapot.status_code, teapot.text) == (418, "teapot")
    assert serve.client.get("/", params={"kind": "list"}).json() == [1, 2, 3]
    failed = serve.client.get("/", params={"kind": "error"}, headers={"x-request-id": "req-42"})
    assert failed.status_code == 500
    # The client learns the request id, never the exception's text (it is logged instead).
    assert failed.text == "Internal Server Error (request id req-42)"
    # The replica keeps serving after a request that failed.
    assert serve.client.get("/").status_code == 200
    # check_health() ran once before the replica was added.
    assert serve.client.get("/").json()["health_checks"] >= 1


def test_fastapi_ingress_with_method_routes(serve: Swell) -> None:
    swell.run(apps.fastapi_ingress_app, route_prefix="/fa")
    assert serve.client.get("/fa/hello/Ada", params={"excited": "true"}).json() == {
        "message": "Hi Ada!"
    }
    assert serve.client.post("/fa/items", json={"a": 1, "b": 2}).json() == {"total": 3}
    assert serve.client.post("/fa/items", json={"a": "x"}).status_code == 422
    assert serve.client.get("/fa/docs").status_code == 200


def test_killed_replica_is_replaced_while_requests_succeed(serve: Swell) -> None:
    swell.run(apps.whoami_app)
    before = swell.status().applications["default"].deployments["WhoAmI"].replicas
    victim = before[0]
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGKILL)
    failures = 0
    answered_by = set()

    def replaced() -> bool:
        nonlocal failures
        response = serve.client.get("/")
        if response.status_code != 200:
            failures += 1
        else:
            answered_by.add(response.json()["replica"])
        dep = swell.status().applications["default"].deployments["WhoAmI"]
        ids = {r.replica_id for r in dep.replicas if r.state == "RUNNING"}
        return victim.replica_id not in ids and len(ids) == 2

    wait_until(replaced, 30, "the killed replica to be replaced")
    assert failures == 0
    # The new replica serves too.
    new_ids = {
        r.replica_id for r in swell.status().applications["default"].deployments["WhoAmI"].replicas
    }
    seen = {serve.client.get("/").json()["replica"] for _ in range(40)}
    assert seen == new_ids


def test_constructor_error_is_reported_in_status(serve: Swell) -> None:
    with pytest.raises(swell.DeploymentFailedError, match="weights file is corrupt"):
        swell.run(apps.failing_app)
    app = swell.status().applications["default"]
    assert app.status == "DEPLOY_FAILED"
    message = app.deployments["FailsToStart"].message
    assert "BrokenModel: weights file is corrupt" in message
    assert "Traceback" in message


def test_full_queue_answers_503(tmp_path: Path) -> None:
    from tests.integration.conftest import free_port

    port = free_port()
    swell.start(http_options={"port": port, "queue_timeout_s": 0.5}, admin_port=0)
    try:
        swell.run(apps.one_at_a_time_app)
        gate = tmp_path / "gate"
        url = f"http://127.0.0.1:{port}/"
        results: list[int] = []
        holder = threading.Thread(
            target=lambda: results.append(
                httpx.get(url, params={"gate": str(gate)}, timeout=30).status_code
            )
        )
        holder.start()
        wait_until(
            lambda: _ongoing_of("OneAtATime") == 1, 10, "the first request to occupy the replica"
        )
        # The replica's one slot is taken: HAProxy queues the next request, then gives up.
        queued = httpx.get(url, params={"gate": str(gate)}, timeout=30)
        assert queued.status_code == 503
        gate.touch()
        holder.join(15)
        assert results == [200]
    finally:
        swell.shutdown()


def _ongoing_of(deployment: str) -> int:
    status = swell.status().raw
    replica = status["applications"]["default"]["deployments"][deployment]["replicas"][0]
    return replica_stats(replica["control_address"])["ongoing"]


def test_shutdown_leaves_no_process_behind() -> None:
    from tests.integration.conftest import free_port

    swell.start(http_options={"port": free_port()}, admin_port=0)
    try:
        swell.run(apps.whoami_app)
        pids = started_pids()
        pids += [child for pid in pids for child in children_of(pid)]
        # Two replicas, the HAProxy master and its worker.
        assert len(pids) == 4
        assert all(pid_alive(pid) for pid in pids)
    finally:
        swell.shutdown()
    # shutdown() returns only after everything it started has been reaped.
    assert [pid for pid in pids if pid_alive(pid)] == []


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_kept_alive_clients_lose_no_request_across_route_changes(serve: Swell) -> None:
    """Each route change reloads HAProxy; a client reusing its connection must never find it
    closed under a request (the old worker answers it, with Connection: close, instead)."""
    swell.run(apps.whoami_app, name="root", route_prefix="/")
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=serve.url, timeout=30) as kept_alive:
            while not stop.is_set():
                try:
                    response = kept_alive.get("/")
                    if response.status_code != 200:
                        failures.append(f"HTTP {response.status_code}")
                except httpx.HTTPError as error:
                    failures.append(type(error).__name__)
                answered[0] += 1

    workers = [threading.Thread(target=client) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        for round_ in range(4):
            swell.run(apps.text_app, name="text", route_prefix=f"/text{round_}")
            swell.delete("text")
        seen = answered[0]
        wait_until(lambda: answered[0] > seen + 20, 30, "requests after the last reload")
    finally:
        stop.set()
        for worker in workers:
            worker.join(30)
    assert failures == [], failures


@pytest.mark.parametrize("threadpool", [None, "1", "0"])
def test_ray_serve_run_sync_in_threadpool_decides_where_plain_methods_run(
    serve: Swell, threadpool: str | None
) -> None:
    """Ray's switch, read by each replica: unset or 1, plain def methods run in worker
    threads (and may block on a handle call's result); 0, they run on the replica's loop,
    where blocking on a result would hang the replica, so result() says so instead."""
    swell.run(apps.sync_placement_app(threadpool))
    answer = serve.client.get("/").json()
    on_loop = threadpool == "0"
    assert answer["on_loop"] is on_loop
    if on_loop:
        assert answer["peer"].startswith("RuntimeError: result() would block the event loop")
    else:
        assert answer["peer"] == "peer"
    handle = swell.get_app_handle("default")
    items = list(handle.options(stream=True).tokens.remote(3))
    assert items == [f"{i}:{on_loop}" for i in range(3)]


def test_a_bad_run_sync_in_threadpool_value_is_named(serve: Swell) -> None:
    with pytest.raises(Exception, match="RAY_SERVE_RUN_SYNC_IN_THREADPOOL='yes'"):
        swell.run(apps.sync_placement_app("yes"))
