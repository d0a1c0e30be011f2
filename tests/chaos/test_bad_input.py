"""Bad input never disturbs what runs: malformed HTTP through HAProxy, and generated configs
over the admin API. Each bad input gets a 4xx (or a closed connection) or a refusal naming
the field; no replica crashes or restarts, and the app keeps serving."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swell._private_files import find_admin_token
from tests.chaos import scenarios
from tests.chaos.service import ChaosService

pytestmark = pytest.mark.timeout(300)

READ_DEADLINE_S = 5.0


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosService]:
    service = scenarios.fresh_service(tmp_path_factory.mktemp("bad-input"))
    try:
        yield service
    finally:
        service.stop()


def exchange(port: int, raw: bytes, pause_s: float = 0.0) -> bytes:
    """Send raw bytes; return whatever comes back before the server closes or the deadline."""
    with socket.create_connection(("127.0.0.1", port), timeout=READ_DEADLINE_S) as conn:
        try:
            if pause_s:
                for byte in raw:
                    conn.sendall(bytes([byte]))
                    time.sleep(pause_s)  # a slow client, on purpose
            else:
                conn.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: a refusal too
        received = b""
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return received


def status_of(answer: bytes) -> int | None:
    """The status code of the first response, None if the connection closed without one."""
    if not answer:
        return None
    return int(answer.split(b" ", 2)[1])


MALFORMED: dict[str, bytes] = {
    "garbage request line": b"GARBAGE\r\n\r\n",
    "binary junk": bytes(range(256)) * 4 + b"\r\n\r\n",
    "not HTTP": b"GET /unary HTTX/1.1\r\nHost: x\r\n\r\n",
    "no path": b"GET\r\nHost: x\r\n\r\n",
    "huge request line": b"GET /" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "huge header": b"GET /unary HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 200_000 + b"\r\n\r\n",
    "thousands of headers": b"GET /unary HTTP/1.1\r\nHost: x\r\n"
    + b"".join(b"X-%d: y\r\n" % i for i in range(5000))
    + b"\r\n",
    "bad chunk size": b"POST /post HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"ZZZ\r\nhello\r\n0\r\n\r\n",
    "chunk longer than declared": b"POST /post HTTP/1.1\r\nHost: x\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n2\r\nhello\r\n0\r\n\r\n",
    "negative content-length": b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    "two content-lengths": b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
    b"Content-Length: 5\r\n\r\nabcde",
    "header without colon": b"GET /unary HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
    "NUL in header": b"GET /unary HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n",
    "body shorter than declared, then close": b"POST /post HTTP/1.1\r\nHost: x\r\n"
    b"Content-Length: 1000\r\n\r\nonly a little",
}


def test_malformed_http_gets_4xx_or_a_close_and_nothing_crashes(service: ChaosService) -> None:
    before = {k: v["pid"] for k, v in service.running().items()}
    tried: dict[str, int | None] = {}
    for name, raw in MALFORMED.items():
        tried[name] = status_of(exchange(service.port, raw))
    bad = {name: code for name, code in tried.items() if code is not None and not 400 <= code < 500}
    assert not bad, bad
    # Content-Length beside chunked: chunked wins (RFC 9112), and the request hidden after
    # the empty body is answered as its own request or dropped with the connection (HAProxy
    # closes after such a message), never smuggled to the replica inside the first one.
    smuggle = (
        b"POST /post HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n"
        b"Connection: close\r\n\r\n"
    )
    answers = exchange(service.port, smuggle)
    assert status_of(answers) == 200 and b'{"received":0}' in answers, answers
    responses = answers.count(b"HTTP/1.1 ")
    assert responses == 1 or (responses == 2 and b"no such path" in answers), answers
    # A slow client (headers one byte at a time) is served or cut, never a 5xx.
    slow = b"GET /unary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    code = status_of(exchange(service.port, slow, pause_s=0.02))
    assert code in (200, 408, None), code
    print(f"malformed requests tried: {len(tried) + 2}; answers: {tried}")
    assert {k: v["pid"] for k, v in service.running().items()} == before
    assert httpx.get(f"{service.url}/unary", timeout=30).status_code == 200


# Generated configs: one field of a valid config made invalid at a time ----------------------

_VALID_APP: dict[str, Any] = {
    "name": "chaos",
    "route_prefix": "/",
    "import_path": "tests.chaos.chaos_app:build",
    "args": {"version": "v1"},
}

_BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "name": st.sampled_from(["", "a b", "bad\n", "x/y", "näme", "a;b", 7]),
    "route_prefix": st.sampled_from(["x", "/a/", "/a b", "/a\nb", "/a#b", '/a"b', "/%41", 3]),
    "import_path": st.sampled_from([3, None, ["x"]]),
    "max_ongoing_requests": st.sampled_from([0, -1, "many", 1.5, None]),
    "num_replicas": st.sampled_from([-1, "lots", 2.5]),
    "graceful_shutdown_timeout_s": st.sampled_from([-1, "soon"]),
    "health_check_period_s": st.sampled_from([0, -3, "often"]),
    "ray_actor_options": st.sampled_from([{"num_gpus_typo": 1}, "cpu", 3]),
    "autoscaling_config": st.sampled_from(
        [{"min_replicas": 5, "max_replicas": 1}, {"target_ongoing_requests": 0}, "auto"]
    ),
    "unknown_field": st.sampled_from([1, "x", None]),
    "port": st.sampled_from([0, 70000, "http", -1]),
}


def _bad_config(field: str, value: Any) -> dict[str, Any]:
    app = dict(_VALID_APP)
    http: dict[str, Any] = {}
    if field in ("name", "route_prefix", "import_path"):
        app[field] = value
    elif field == "port":
        http["port"] = value
    elif field == "unknown_field":
        app["oops"] = value
    else:
        app["deployments"] = [{"name": "ChaosModel", field: value}]
    return {"http_options": http, "applications": [app]}


@st.composite
def bad_configs(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    field = draw(st.sampled_from(sorted(_BAD_VALUES)))
    return field, _bad_config(field, draw(_BAD_VALUES[field]))


def test_generated_bad_configs_are_refused_naming_the_field(service: ChaosService) -> None:
    token = find_admin_token(service.admin_port)
    admin = httpx.Client(
        base_url=service.address, headers={"authorization": f"Bearer {token}"}, timeout=30
    )
    before = {k: v["pid"] for k, v in service.running().items()}
    tried = []

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(bad_configs())
    def refused(case: tuple[str, dict[str, Any]]) -> None:
        field, document = case
        tried.append(field)
        answer = admin.put("/api/serve/applications/", json=document)
        assert answer.status_code == 400, (field, document, answer.text)
        error = answer.json()["error"]
        named = "oops" if field == "unknown_field" else field
        assert named in error, (field, error)

    try:
        refused()
    finally:
        admin.close()
    print(f"bad configs tried: {len(tried)} over {len(set(tried))} fields")
    assert {k: v["pid"] for k, v in service.running().items()} == before
    assert service.app_status() == "RUNNING"
    assert httpx.get(f"{service.url}/unary", timeout=30).status_code == 200
