"""The ingress alone: a real HAProxy (each binary on this machine) driven by an HAProxyManager,
in front of stand-in replicas. Membership, reloads, timeouts, limits and headers."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from swell._ingress.haproxy_config import backend_name
from swell._protocol import BACKEND_QUEUE
from swell.exceptions import HAProxyError
from tests.certs import Issued, TestCA
from tests.integration.conftest import haproxy_binaries, wait_until
from tests.integration.ingress_harness import Ingress, Upstream, running_ingress

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture(params=haproxy_binaries())
def binary(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


def add(ingress: Ingress, app: str, upstream: Upstream, check_port: int | None = None) -> None:
    ingress.call(
        ingress.manager.add_server(app, upstream.name, upstream.address, 5, check_port=check_port)
    )


def wait_served_by(ingress: Ingress, path: str, name: str) -> None:
    def served() -> bool:
        try:
            return bool(httpx.get(ingress.url + path, timeout=5).json()["server"] == name)
        except (httpx.HTTPError, ValueError, KeyError):
            return False

    wait_until(served, 15, f"{name} to serve {path}")


def reloads(runtime_dir: Path) -> int:
    return (runtime_dir / "haproxy.log").read_text().count("Reloading HAProxy")


# Membership ---------------------------------------------------------------------------------


def test_add_drain_remove_cycles_leave_no_stale_server(binary: str, tmp_path: Path) -> None:
    """A rolling update's worth of replacements: each old server really leaves HAProxy, though
    HAProxy refuses ``del server`` while pooled idle connections to it remain."""
    with running_ingress(binary, tmp_path / "rt") as ingress, httpx.Client() as client:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        current = ingress.upstream("r0")
        add(ingress, "a", current)
        wait_served_by(ingress, "/", "r0")
        for cycle in range(1, 5):
            new = ingress.upstream(f"r{cycle}")
            add(ingress, "a", new)
            wait_served_by(ingress, "/", new.name)
            # Traffic to both leaves idle connections to the old one in HAProxy's pool.
            answered = {client.get(ingress.url + "/").json()["server"] for _ in range(20)}
            assert current.name in answered
            ingress.call(manager.drain_server("a", current.name))
            ingress.call(manager.remove_server("a", current.name))
            assert set(ingress.servers()) == {new.name}
            current = new
        assert [s.name for s in manager.backends["a"].servers] == ["r4"]
        assert ingress.call(manager.reconcile()) == []


def test_a_reload_keeps_servers_added_at_runtime(binary: str, tmp_path: Path) -> None:
    """Any reload, even one swell did not ask for (the old re-signal loop's extra SIGUSR2),
    starts from a file that has every server the runtime API added."""
    with running_ingress(binary, tmp_path / "rt") as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        upstream = ingress.upstream("r1")
        add(ingress, "a", upstream)
        wait_served_by(ingress, "/", "r1")
        worker = ingress.call(manager.runtime.info()).pid
        assert manager.pid is not None
        os.kill(manager.pid, signal.SIGUSR2)
        wait_until(
            lambda: ingress.call(manager.runtime.info()).pid != worker, 15, "the stray reload"
        )
        assert set(ingress.servers()) == {"r1"}
        wait_served_by(ingress, "/", "r1")


def test_route_changes_reload_once_each_and_a_failed_one_is_undone(
    binary: str, tmp_path: Path
) -> None:
    runtime_dir = tmp_path / "rt"
    with running_ingress(binary, runtime_dir) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/a"))
        upstream = ingress.upstream("r1")
        add(ingress, "a", upstream)
        wait_served_by(ingress, "/a/x", "r1")
        good_config = (runtime_dir / "haproxy.cfg").read_text()
        # A prefix no config validation would let through: HAProxy rejects the file.
        with pytest.raises(HAProxyError, match="undone"):
            ingress.call(manager.set_route("bad", "/b\n    no-such-keyword"))
        assert set(manager.backends) == {"a"}
        assert (runtime_dir / "haproxy.cfg").read_text() == good_config
        # Later route changes are not broken by the failed one.
        ingress.call(manager.set_route("c", "/c"))
        assert httpx.get(ingress.url + "/-/routes").json() == {"/a": "a", "/c": "c"}
        wait_served_by(ingress, "/a/x", "r1")
        ingress.call(manager.remove_route("c"))
        # One reload per route change that reached HAProxy; none resent.
        assert reloads(runtime_dir) == 3
        assert manager.describe()["config_generation"] == 4


def test_health_checks_go_to_the_check_port(binary: str, tmp_path: Path) -> None:
    with running_ingress(binary, tmp_path / "rt") as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        user, control = ingress.upstream("r1"), ingress.upstream("control")
        add(ingress, "a", user, check_port=control.port)
        wait_served_by(ingress, "/", "r1")
        assert ingress.servers()["r1"].check_port == control.port
        wait_until(lambda: control.checks >= 2, 10, "health checks on the control port")
        # Loaded from the file after a reload, the server keeps its check port.
        ingress.call(manager.set_route("b", "/b"))
        before = control.checks
        wait_until(lambda: control.checks >= before + 2, 10, "checks after the reload")
        assert user.checks == 0


# Headers and limits -----------------------------------------------------------------------


def test_request_ids_and_route_prefix(binary: str, tmp_path: Path) -> None:
    with running_ingress(binary, tmp_path / "rt", max_request_body_bytes=100) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("api", "/api"))
        ingress.call(manager.set_route("empty", "/empty"))  # no servers: HAProxy answers 503
        add(ingress, "api", ingress.upstream("r1"))
        wait_served_by(ingress, "/api/x", "r1")
        with httpx.Client(base_url=ingress.url) as client:
            made = client.get("/api/x", headers={"x-swell-route-prefix": "/forged"})
            assert UUID.fullmatch(made.headers["x-request-id"])
            assert made.json()["request_id"] == made.headers["x-request-id"]
            # The prefix comes from HAProxy, replacing what the client sent.
            assert made.json()["route_prefix"] == ["/api"]
            kept = client.get("/api/x", headers={"x-request-id": "trace-42.a:b"})
            assert kept.headers["x-request-id"] == "trace-42.a:b"
            assert kept.json()["request_id"] == "trace-42.a:b"
            for insane in ("has space", "x" * 129, "<script>", "a,b"):
                replaced = client.get("/api/x", headers={"x-request-id": insane})
                assert UUID.fullmatch(replaced.headers["x-request-id"]), insane
                assert replaced.json()["request_id"] == replaced.headers["x-request-id"]
            # HAProxy's own answers carry the id too.
            for path, status in (("/nothing", 404), ("/empty", 503), ("/-/healthz", 200)):
                answer = client.get(path, headers={"x-request-id": "mine-1"})
                assert answer.status_code == status
                assert answer.headers["x-request-id"] == "mine-1"
            too_big = client.post("/api/x", content=b"x" * 101)
            assert too_big.status_code == 413
            assert UUID.fullmatch(too_big.headers["x-request-id"])


def test_oversized_body_is_refused_before_it_is_sent(binary: str, tmp_path: Path) -> None:
    with running_ingress(binary, tmp_path / "rt", max_request_body_bytes=1000) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        upstream = ingress.upstream("r1")
        add(ingress, "a", upstream)
        wait_served_by(ingress, "/", "r1")
        assert httpx.post(ingress.url + "/", content=b"x" * 1000).json()["body_bytes"] == 1000
        served = upstream.requests
        with socket.create_connection(("127.0.0.1", ingress.port), timeout=5) as sock:
            sock.sendall(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
            started = time.monotonic()
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 413"), answer
        assert time.monotonic() - started < 2
        assert upstream.requests == served


def test_slow_clients_are_cut_but_slow_streams_are_not(binary: str, tmp_path: Path) -> None:
    with running_ingress(
        binary, tmp_path / "rt", request_header_timeout_s=1, client_timeout_s=1
    ) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        upstream = ingress.upstream("r1")
        add(ingress, "a", upstream)
        wait_served_by(ingress, "/", "r1")
        served = upstream.requests
        # Headers a byte at a time (each gap shorter than any inactivity timeout).
        assert trickle(ingress.port, b"GET / HTTP/1.1\r\nHost: t\r\n", b"X-Slow: y\r\n") < 3
        # Headers at once, then the body a byte at a time.
        head = b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n"
        assert trickle(ingress.port, head, b"x") < 3
        assert upstream.requests == served  # neither reached the replica
        # A stream pausing longer than the client timeout between chunks is not cut.
        with httpx.stream("GET", ingress.url + "/stream?chunks=3&gap=1.6", timeout=10) as stream:
            assert list(stream.iter_lines()) == ["chunk 0", "chunk 1", "chunk 2"]


def trickle(port: int, start: bytes, unit: bytes) -> float:
    """Send ``start``, then ``unit`` every 0.2 s until HAProxy answers 408 and closes; the time
    it took. Fails after 8 s."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(start)
        started = time.monotonic()
        sock.settimeout(0.2)
        received = b""
        while time.monotonic() - started < 8:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                try:
                    sock.sendall(unit)
                except OSError:
                    break
                continue
            except OSError:
                break
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 408"), received
    return time.monotonic() - started


def test_requests_past_max_queued_requests_get_503_at_once(binary: str, tmp_path: Path) -> None:
    """As Ray's proxy does: with ``max_queued_requests`` already waiting for the app's
    replicas, the next request is answered 503 at once instead of joining the queue; the
    limit can change without touching the servers."""
    with running_ingress(binary, tmp_path / "rt", queue_timeout_s=30) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/", max_queued_requests=1))
        upstream = ingress.upstream("r1")
        ingress.call(manager.add_server("a", "r1", upstream.address, 1))  # maxconn 1
        wait_served_by(ingress, "/", "r1")

        def slow() -> int:
            return httpx.get(ingress.url + "/stream?chunks=2&gap=1", timeout=30).status_code

        with ThreadPoolExecutor(max_workers=2) as pool:
            busy = pool.submit(slow)
            wait_until(
                lambda: (
                    ingress.call(manager.runtime.server_sessions(backend_name("a"))).get("r1", 0)
                    >= 1
                ),
                15,
                "r1 to be busy",
            )
            waiting = pool.submit(slow)
            wait_until(
                lambda: (
                    ingress.call(manager.runtime.server_sessions(backend_name("a"))).get(
                        BACKEND_QUEUE, 0
                    )
                    >= 1
                ),
                15,
                "one request to wait in the backend's queue",
            )
            shed = httpx.get(ingress.url + "/", timeout=5)
            assert shed.status_code == 503
            assert "max_queued_requests" in shed.text
            assert shed.headers["x-request-id"]
            assert [busy.result(), waiting.result()] == [200, 200]
        # No limit any more: the same request waits its turn.
        ingress.call(manager.set_route("a", "/", max_queued_requests=-1))
        assert "max_queued_requests" not in (tmp_path / "rt" / "haproxy.cfg").read_text()
        assert httpx.get(ingress.url + "/", timeout=5).json()["server"] == "r1"


# HAProxy restarted ------------------------------------------------------------------------


@pytest.mark.parametrize("victim", ["worker", "master"])
def test_membership_changes_while_haproxy_restarts(
    binary: str, victim: str, tmp_path: Path
) -> None:
    """Killed, HAProxy comes back from the whole desired state, including the changes that
    arrived while it was down (they must neither fail nor get lost)."""
    with running_ingress(binary, tmp_path / "rt") as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        old, new = ingress.upstream("r1"), ingress.upstream("r2")
        add(ingress, "a", old)
        wait_served_by(ingress, "/", "r1")
        master = manager.pid
        assert master is not None
        worker = ingress.call(manager.runtime.info()).pid

        async def kill_then_change() -> None:
            os.kill(worker if victim == "worker" else master, signal.SIGKILL)
            # No await before these: they may land while nobody has seen the exit yet.
            await manager.add_server("a", "r2", new.address, 5)
            await manager.remove_server("a", "r1")

        ingress.call(kill_then_change())
        wait_until(
            lambda: manager.describe()["status"] == "HEALTHY" and manager.pid != master,
            5,
            "HAProxy to be restarted",
        )
        description = manager.describe()
        assert description["restarts"] == 1
        assert "exited unexpectedly" in description["last_error"]
        wait_served_by(ingress, "/", "r2")
        wait_until(lambda: set(ingress.servers()) == {"r2"}, 10, "r1 gone, r2 there")
        served = {httpx.get(ingress.url + "/").json()["server"] for _ in range(10)}
        assert served == {"r2"}


# TLS --------------------------------------------------------------------------------------


def tls_client(ca: Path, client: Issued | None = None, http2: bool = False) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(ca))
    if client is not None:
        context.load_cert_chain(str(client.cert), str(client.key))
    return httpx.Client(verify=context, http2=http2, timeout=10)


def test_https_with_http1_and_http2(binary: str, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    server = ca.issue("server")
    with running_ingress(
        binary, tmp_path / "rt", ssl_certfile=str(server.cert), ssl_keyfile=str(server.key)
    ) as ingress:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        add(ingress, "a", ingress.upstream("r1"))
        assert manager.describe()["tls"] is True
        with tls_client(ca.cert) as h1, tls_client(ca.cert, http2=True) as h2:
            wait_until(lambda: h1.get(ingress.url + "/").status_code == 200, 10, "HTTPS")
            one = h1.get(ingress.url + "/x")
            two = h2.get(ingress.url + "/x")
        assert (one.http_version, one.json()["server"]) == ("HTTP/1.1", "r1")
        assert (two.http_version, two.json()["server"]) == ("HTTP/2", "r1")
        assert UUID.fullmatch(two.headers["x-request-id"])
        # Plain HTTP is not served on the TLS port.
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{ingress.port}/", timeout=5)


def test_client_certificate_required_with_ssl_ca_certs(binary: str, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    server, client = ca.issue("server"), ca.issue("client", server=False)
    stranger = TestCA(tmp_path, "another CA").issue("stranger", server=False)
    with running_ingress(
        binary,
        tmp_path / "rt",
        ssl_certfile=str(server.cert),
        ssl_keyfile=str(server.key),
        ssl_ca_certs=str(ca.cert),
    ) as ingress:
        ingress.call(ingress.manager.set_route("a", "/"))
        add(ingress, "a", ingress.upstream("r1"))
        with tls_client(ca.cert, client) as trusted:
            wait_until(lambda: trusted.get(ingress.url + "/").status_code == 200, 10, "mTLS")
        for who in (None, stranger):
            with tls_client(ca.cert, who) as refused, pytest.raises(httpx.HTTPError):
                refused.get(ingress.url + "/")


def test_encrypted_key_with_its_password(binary: str, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    server = ca.issue("server", password=b"correct horse")
    runtime_dir = tmp_path / "rt"
    with running_ingress(
        binary,
        runtime_dir,
        ssl_certfile=str(server.cert),
        ssl_keyfile=str(server.key),
        ssl_keyfile_password="correct horse",
    ) as ingress:
        ingress.call(ingress.manager.set_route("a", "/"))
        add(ingress, "a", ingress.upstream("r1"))
        with tls_client(ca.cert) as client:
            wait_until(lambda: client.get(ingress.url + "/").status_code == 200, 10, "HTTPS")
        # The password is in no file swell wrote, nor in HAProxy's argv or environment.
        for path in runtime_dir.iterdir():
            if path.is_file():
                assert b"correct horse" not in path.read_bytes(), path
        assert stat.S_IMODE((runtime_dir / "tls.pem").stat().st_mode) == 0o600
        pid = ingress.manager.pid
        for name in ("cmdline", "environ"):
            assert b"correct horse" not in Path(f"/proc/{pid}/{name}").read_bytes()
