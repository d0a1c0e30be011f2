"""--tls-cert/--tls-key/--tls-ca: swell's internal hops (HAProxy -> replica, handle calls,
controller -> replica) over TLS, on real replicas and a real HAProxy of each version."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import swell
from swell import api
from swell._cluster_tls import client_context
from swell._dataplane.client import Connection
from swell._dataplane.handshake import NONCE_BYTES, PROOF_BYTES, HandshakeError
from swell._dataplane.wire import HEADER, Kind, frame
from swell._protocol import CLUSTER_TOKEN_HEADER, CONTROL_STATS_PATH
from swell.exceptions import ConfigError
from tests.certs import Issued, TestCA, self_signed
from tests.integration import apps
from tests.integration.conftest import (
    Swell,
    free_port,
    haproxy_binaries,
    shut_down_whole,
    wait_until,
)
from tests.integration.ingress_harness import running_ingress

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=haproxy_binaries())
def binary(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


def _server_context(issued: Issued) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(issued.cert), str(issued.key))
    return context


def _tls_swell(binary: str, cert: Issued, ca: Path | None) -> Iterator[Swell]:
    port = free_port()
    swell.start(
        http_options={"host": "127.0.0.1", "port": port, "haproxy_binary": binary},
        admin_port=0,
        tls_cert=str(cert.cert),
        tls_key=str(cert.key),
        tls_ca=str(ca) if ca is not None else None,
    )
    instance = Swell(port)
    with shut_down_whole(instance.client.close):
        yield instance


@pytest.fixture
def tls_serve(binary: str, tmp_path: Path) -> Iterator[tuple[Swell, TestCA]]:
    ca = TestCA(tmp_path)
    for instance in _tls_swell(binary, ca.issue("cluster"), ca.cert):
        yield instance, ca


def _read_until_closed(peer: socket.socket) -> bytes:
    answer = b""
    try:
        while chunk := peer.recv(4096):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def _model_replica() -> swell.serve_status.ReplicaStatus:
    return swell.status().applications["default"].deployments["Model"].replicas[0]


def _connect(address: str, replica_id: str, tls: ssl.SSLContext | None) -> None:
    """Open (and close) a data-plane connection as a caller of this cluster would."""
    instance = api._instance
    assert instance is not None

    async def attempt() -> None:
        connection = await Connection.open(
            address, instance.cluster_token, replica_id, timeout_s=10, tls=tls
        )
        await connection.close()

    asyncio.run(attempt())


def test_http_and_handle_calls_over_tls(tls_serve: tuple[Swell, TestCA], tmp_path: Path) -> None:
    serve, ca = tls_serve
    swell.run(apps.composed_app)
    # HAProxy -> Composer over TLS, Composer -> Model handle calls over TLS.
    assert serve.client.post("/", json={"x": [1, 2, 3]}).json() == {"y": 7.0, "chained": 3.5}
    model = swell.get_deployment_handle("Model", "default")
    assert model.predict.remote([1.0, 2.0]).result(timeout_s=30) == 3.0
    assert list(model.options(stream=True).tokens.remote(2)) == ["tok0 ", "tok1 "]
    # The controller reads replicas' control ports over TLS: their health and load show.
    replica = _model_replica()
    assert replica.state == "RUNNING"
    assert replica.data_address is not None and replica.control_address is not None
    instance = api._instance
    assert instance is not None
    token = {CLUSTER_TOKEN_HEADER: instance.cluster_token}
    with httpx.Client(verify=client_context(str(ca.cert)), timeout=10) as verified:
        stats = verified.get(
            f"https://{replica.control_address}{CONTROL_STATS_PATH}", headers=token
        )
    assert stats.status_code == 200
    # Plain HTTP to the control and user ports is not served.
    for address in (replica.control_address, replica.address):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{address}{CONTROL_STATS_PATH}", headers=token, timeout=10)
    # The data plane: a plaintext caller, even one holding the token, is refused...
    with pytest.raises((ConnectionError, OSError)):
        _connect(replica.data_address, replica.replica_id, None)
    host, _, port = replica.data_address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=10) as peer:
        peer.sendall(frame(0, Kind.HELLO, os.urandom(NONCE_BYTES)))
        answer = _read_until_closed(peer)
    # At most a TLS alert comes back, never the replica's proof.
    assert HEADER.pack(0, Kind.SERVER_PROOF, NONCE_BYTES + PROOF_BYTES) not in answer
    # ...so is a caller that trusts another CA, with an error that says so...
    stranger = TestCA(tmp_path, "another CA")
    with pytest.raises(HandshakeError, match="cluster CA"):
        _connect(replica.data_address, replica.replica_id, client_context(str(stranger.cert)))
    # ...and the cluster's own context works.
    _connect(replica.data_address, replica.replica_id, client_context(str(ca.cert)))


def test_a_self_signed_cluster_certificate_is_its_own_ca(tmp_path: Path) -> None:
    """A self-signed --tls-cert without --tls-ca; scale from zero through the wake-up server."""
    cert = self_signed(tmp_path)
    for serve in _tls_swell(haproxy_binaries()[0], cert, None):
        swell.run(apps.composed_app, name="composed", route_prefix="/composed")
        expected = {"y": 7.0, "chained": 3.5}
        assert serve.client.post("/composed", json={"x": [1, 2, 3]}).json() == expected
        # From zero replicas: HAProxy -> the controller's wake-up server -> the new replica,
        # both hops over TLS.
        swell.run(apps.cold_app)
        # A new connection: the idle one may still be the previous HAProxy worker's.
        answer = httpx.get(serve.url + "/", timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["replica"].startswith("Elastic-")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tls_cert": "missing.pem"}, "--tls-cert \\(tls_cert\\) .*missing.pem.* cannot be read"),
        ({"tls_key": "other.key"}, "--tls-key \\(tls_key\\) .* is not the key of the certificate"),
        ({"tls_ca": "stranger"}, "is not signed by the CA in --tls-ca"),
        ({"tls_key": "encrypted.key"}, "--tls-key .* is encrypted"),
        ({"tls_ca": "not-pem"}, "--tls-ca \\(tls_ca\\) .* holds no PEM certificate"),
    ],
)
def test_bad_tls_files_are_refused_naming_the_flag(
    tmp_path: Path, change: dict[str, str], message: str
) -> None:
    ca = TestCA(tmp_path)
    cluster, other = ca.issue("cluster"), ca.issue("other")
    (tmp_path / "not-pem").write_text("hello")
    files = {
        "other.key": str(other.key),
        "encrypted.key": str(ca.issue("locked", password=b"pw").key),
        "stranger": str(TestCA(tmp_path, "stranger CA").cert),
        "not-pem": str(tmp_path / "not-pem"),
        "missing.pem": str(tmp_path / "missing.pem"),
    }
    settings = {"tls_cert": str(cluster.cert), "tls_key": str(cluster.key), "tls_ca": str(ca.cert)}
    settings.update({k: files[v] for k, v in change.items()})
    with pytest.raises(ConfigError, match=message):
        swell.start(http_options={"port": free_port()}, admin_port=0, **settings)
    assert api._instance is None  # nothing started


def test_tls_options_go_in_pairs() -> None:
    with pytest.raises(ConfigError, match="tls_cert needs tls_key"):
        swell.start(admin_port=0, tls_cert="x.pem")
    with pytest.raises(ConfigError, match="tls_ca needs tls_cert"):
        swell.start(admin_port=0, tls_ca="x.pem")
    assert api._instance is None


# HAProxy alone, against stand-in replicas that speak TLS ----------------------------------


def test_haproxy_verifies_replicas_against_the_cluster_ca(binary: str, tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    replica_tls = _server_context(ca.issue("replica"))
    with running_ingress(binary, tmp_path / "rt", replica_ca=str(ca.cert)) as ingress:
        ingress.call(ingress.manager.set_route("a", "/"))
        user, control = ingress.upstream("r1", replica_tls), ingress.upstream("c1", replica_tls)
        ingress.call(
            ingress.manager.add_server("a", "r1", user.address, 5, check_port=control.port)
        )
        wait_until(lambda: httpx.get(ingress.url + "/x", timeout=5).status_code == 200, 15, "200")
        assert httpx.get(ingress.url + "/x", timeout=5).json()["server"] == "r1"
        wait_until(lambda: control.checks > 0, 15, "a health check over TLS")


def test_haproxy_refuses_a_replica_the_ca_did_not_sign(binary: str, tmp_path: Path) -> None:
    ca, stranger = TestCA(tmp_path), TestCA(tmp_path, "stranger CA")
    impostor_tls = _server_context(stranger.issue("impostor"))
    runtime_dir = tmp_path / "rt"
    with running_ingress(binary, runtime_dir, replica_ca=str(ca.cert)) as ingress:
        ingress.call(ingress.manager.set_route("a", "/"))
        impostor = ingress.upstream("r1", impostor_tls)
        ingress.call(ingress.manager.add_server("a", "r1", impostor.address, 5))
        log = runtime_dir / "haproxy.log"
        wait_until(
            lambda: log.exists() and "r1 is DOWN" in log.read_text(), 15, "HAProxy to mark r1 DOWN"
        )
        assert "SSL handshake failure" in log.read_text()
        assert httpx.get(ingress.url + "/x", timeout=10).status_code == 503
        assert impostor.requests == 0 and impostor.checks == 0


# The command line ---------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_passes_the_tls_flags_to_the_detached_instance(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert = ca.issue("cluster")
    port, admin_port = free_port(), free_port()
    flags = ["--tls-cert", str(cert.cert), "--tls-key", str(cert.key), "--tls-ca", str(ca.cert)]
    address = f"http://127.0.0.1:{admin_port}"
    # A wrong key is refused before anything starts, naming the flag.
    refused = _cli(
        "start", "--port", str(port), "--admin-port", str(admin_port),
        "--tls-cert", str(cert.cert), "--tls-key", str(ca.issue("other").key),
    )  # fmt: skip
    assert refused.returncode == 1
    assert "--tls-key (tls_key)" in refused.stderr and "is not the key" in refused.stderr
    started = _cli(
        "run", "examples.hello:app", "--non-blocking",
        "--port", str(port), "--admin-port", str(admin_port), *flags,
    )  # fmt: skip
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
        status = json.loads(_cli("status", "--address", address, "--json").stdout)
        (replica,) = status["applications"]["default"]["deployments"]["Hello"]["replicas"][:1]
        with pytest.raises(httpx.HTTPError):  # the replica serves TLS only
            httpx.get(f"http://{replica['address']}/", timeout=10)
        with httpx.Client(verify=client_context(str(ca.cert)), timeout=10) as verified:
            assert verified.get(f"https://{replica['address']}/").status_code == 200
    finally:
        stopped = _cli("shutdown", "--address", address)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
