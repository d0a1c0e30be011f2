"""KubeRay's RayService controller, played against a real ``swell start`` on loopback.

No Kubernetes here: the test makes the calls KubeRay's controller makes, with its shapes, its
2 s client timeout and its 2 s requeue cadence, and runs the worker pods' readiness probe
command. The instance is started the way a KubeRay head pod starts it: ``RAY_AUTH_MODE=token``
and ``RAY_AUTH_TOKEN`` in its environment (KubeRay's ``authOptions.mode: token``), and Ray
Serve's ``RAY_SERVE_ENABLE_HA_PROXY=1`` / ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` set, which swell
must accept. What only a real cluster can show is listed in docs/kubernetes.md.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.conftest import children_of, free_port, pid_alive, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
CLIENT_TIMEOUT_S = 2.0  # KubeRay's dashboard client, talking to the head pod directly
REQUEUE_S = 2.0  # KubeRay's RayService requeue interval
APP_STATUSES = {"NOT_STARTED", "DEPLOYING", "DEPLOY_FAILED", "RUNNING", "UNHEALTHY", "DELETING"}
DEPLOYMENT_STATUSES = {"UPDATING", "HEALTHY", "UNHEALTHY"}
# KubeRay's worker readiness probe, with this test's HTTP port instead of 8000.
PROBE = "wget --tries 1 -T 10 -q -O- http://localhost:{port}/-/healthz | grep success"


def serve_config(version: str = "v1", greeting: str = "hello", **extra: Any) -> dict[str, Any]:
    """serveConfigV2, as KubeRay PUTs it (the manifest's YAML as JSON)."""
    return {
        "applications": [
            {
                "name": "greeter",
                "route_prefix": "/",
                "import_path": "tests.kubernetes.contract_app:build",
                "args": {"version": version},
                "deployments": [
                    {"name": "Greeter", "num_replicas": 2, "user_config": {"greeting": greeting}}
                ],
            }
        ],
        **extra,
    }


def check_shape(document: dict[str, Any]) -> None:
    """What KubeRay's client unmarshals (Go, strict about types) and the values it knows."""
    applications = document["applications"]
    assert isinstance(applications, dict)
    for name, app in applications.items():
        assert app["status"] in APP_STATUSES, (name, app["status"])
        assert isinstance(app.get("message", ""), str)
        assert isinstance(app.get("route_prefix") or "", str)
        assert isinstance(app["deployments"], dict)
        for deployment_name, deployment in app["deployments"].items():
            assert deployment["status"] in DEPLOYMENT_STATUSES, (deployment_name, deployment)
            assert isinstance(deployment.get("message", ""), str)


@dataclass
class FakeOperator:
    """The RayService controller's two calls and its reconcile loop."""

    admin_url: str
    token: str
    cached: dict[str, Any] | None = None
    put_seconds: list[float] = field(default_factory=list)

    def headers(self) -> dict[str, str]:
        return {"x-ray-authorization": f"Bearer {self.token}"}

    def get(self) -> dict[str, Any]:
        response = httpx.get(
            f"{self.admin_url}/api/serve/applications/",
            params={"api_type": "declarative"},
            headers=self.headers(),
            timeout=CLIENT_TIMEOUT_S,
        )
        assert response.status_code == 200, response.text
        document: dict[str, Any] = response.json()
        check_shape(document)
        return document

    def put(self, config: dict[str, Any]) -> httpx.Response:
        began = time.monotonic()
        response = httpx.put(
            f"{self.admin_url}/api/serve/applications/",
            json=config,
            headers=self.headers(),
            timeout=CLIENT_TIMEOUT_S,  # an answer later than this is a failed reconcile
        )
        self.put_seconds.append(time.monotonic() - began)
        if response.status_code == 200:
            self.cached = config
        return response

    @staticmethod
    def ready(document: dict[str, Any]) -> bool:
        apps = document["applications"].values()
        return bool(apps) and all(app["status"] == "RUNNING" for app in apps)

    def reconcile_until_ready(self, config: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Every 2 s: GET; PUT when the config differs from the cached one or no app shows;
        done once every application is RUNNING."""
        deadline = time.monotonic() + timeout_s
        while True:
            tick = time.monotonic()
            document = self.get()
            if self.cached != config or not document["applications"]:
                assert self.put(config).status_code == 200
            elif self.ready(document):
                return document
            if tick > deadline:
                raise AssertionError(f"not RUNNING after {timeout_s}s: {document['applications']}")
            time.sleep(max(0.0, tick + REQUEUE_S - time.monotonic()))  # the operator's requeue


def replica_ids(document: dict[str, Any]) -> set[str]:
    deployment = document["applications"]["greeter"]["deployments"]["Greeter"]
    return {r["replica_id"] for r in deployment["replicas"] if r["state"] == "RUNNING"}


@dataclass
class Head:
    """A head pod's swell: started with the token in its environment, never in argv."""

    port: int
    admin_port: int
    token: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def healthz(self) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{self.port}/-/healthz", timeout=5)

    def log_tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


def descendants(pid: int) -> list[int]:
    found, frontier = [], [pid]
    while frontier:
        children = children_of(frontier.pop())
        found += children
        frontier += children
    return found


def answers(operator: FakeOperator) -> bool:
    try:
        operator.get()
    except httpx.HTTPError:
        return False
    return True


@pytest.fixture(scope="module")
def head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Head]:
    """``swell start --block`` as the head pod's container runs it, stopped by SIGTERM."""
    workdir = tmp_path_factory.mktemp("head")
    token = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    }
    head = Head(free_port(), free_port(), token, workdir / "swell.log")
    command = [sys.executable, "-m", "swell", "start", "--block", "--port", str(head.port)]
    command += ["--admin-host", "127.0.0.1", "--admin-port", str(head.admin_port)]
    with head.log.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    head.process = process
    operator = FakeOperator(head.admin_url, token)
    try:
        wait_until(lambda: answers(operator) or process.poll() is not None, 60, "swell to start")
        assert process.poll() is None, head.log_tail()
        yield head
    finally:
        ours = [process.pid, *descendants(process.pid)]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # what Kubernetes sends when the pod goes
        try:
            process.wait(60)
        finally:
            for pid in ours:  # only what this fixture started
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            process.wait(10)


class Traffic:
    """Clients calling the app through HAProxy until stopped; counts every failure."""

    def __init__(self, port: int) -> None:
        self._url = f"http://127.0.0.1:{port}/"
        self._stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []
        self.seen: set[tuple[str, str]] = set()
        self._thread = threading.Thread(target=self._run, name="contract-traffic", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self._url)
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
                    continue
                body = response.json()
                self.ok += 1
                self.seen.add((body["greeting"], body["version"]))

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def test_the_operator_deploys_and_rolls_with_no_failed_request(head: Head) -> None:
    operator = FakeOperator(head.admin_url, head.token)
    # Before the first deploy: no applications (this is what makes KubeRay PUT), and the
    # ingress is not ready.
    assert operator.get()["applications"] == {}
    assert (head.healthz().status_code, head.healthz().text) == (503, "no routes yet")

    # The first PUT, then the same again at once (a requeue that found no app yet): both
    # answered within the client's 2 s timeout.
    assert operator.put(serve_config()).status_code == 200
    assert operator.put(serve_config()).status_code == 200
    document = operator.reconcile_until_ready(serve_config(), timeout_s=120)
    deployment = document["applications"]["greeter"]["deployments"]["Greeter"]
    assert deployment["status"] == "HEALTHY"
    before = replica_ids(document)
    assert len(before) == 2

    # A re-PUT of the config in force restarts nothing.
    for _ in range(2):
        assert operator.put(serve_config()).status_code == 200
        document = operator.get()
        assert operator.ready(document) and replica_ids(document) == before

    # What the worker pods' readiness probe reads (HAProxy answers it, replicas are up).
    assert (head.healthz().status_code, head.healthz().text) == (200, "success")

    with Traffic(head.port) as traffic:
        # A user_config change: applied to the running replicas in place.
        config = serve_config(greeting="bonjour", target_capacity=100)
        document = operator.reconcile_until_ready(config, timeout_s=120)
        assert document["target_capacity"] == 100
        wait_until(lambda: ("bonjour", "v1") in traffic.seen, 30, "the new greeting")
        assert replica_ids(operator.get()) == before

        # A code-version change through args: every replica replaced, rolling.
        config = serve_config(version="v2", greeting="bonjour")
        operator.reconcile_until_ready(config, timeout_s=180)
        wait_until(
            lambda: replica_ids(operator.get()).isdisjoint(before), 60, "the old replicas to go"
        )
        wait_until(lambda: ("bonjour", "v2") in traffic.seen, 30, "the new version")
    assert traffic.failures == [], traffic.failures[:5]
    assert traffic.ok > 0
    assert max(operator.put_seconds) < CLIENT_TIMEOUT_S, operator.put_seconds


def test_only_schema_errors_are_refused_and_import_errors_show_later(head: Head) -> None:
    operator = FakeOperator(head.admin_url, head.token)
    good = serve_config(version="v2", greeting="bonjour")
    operator.reconcile_until_ready(good, timeout_s=180)
    running = replica_ids(operator.get())

    # Without the token, or with another one: refused.
    url = f"{head.admin_url}/api/serve/applications/"
    assert httpx.get(url, timeout=CLIENT_TIMEOUT_S).status_code == 401
    wrong = {"x-ray-authorization": "Bearer not-the-token"}
    assert httpx.get(url, headers=wrong, timeout=CLIENT_TIMEOUT_S).status_code == 401

    # A schema error: 400 at once, naming the field; nothing changes.
    broken_schema = serve_config()
    broken_schema["applications"][0]["num_replica"] = 3
    response = operator.put(broken_schema)
    assert response.status_code == 400 and "num_replica" in response.text, response.text
    assert httpx.get(url, params={"api_type": "bogus"}, headers=operator.headers()).status_code == (
        400
    )

    # An import error: accepted (the schema is valid), then DEPLOY_FAILED with the reason,
    # while the running version keeps serving.
    broken_import = serve_config()
    broken_import["applications"][0]["import_path"] = "tests.kubernetes.contract_app:nope"
    assert operator.put(broken_import).status_code == 200

    def failed() -> bool:
        app = operator.get()["applications"]["greeter"]
        return bool(app["status"] == "DEPLOY_FAILED" and "nope" in app["message"])

    wait_until(failed, 60, "the broken import to show as DEPLOY_FAILED")
    assert replica_ids(operator.get()) == running
    assert httpx.get(f"http://127.0.0.1:{head.port}/", timeout=10).json()["version"] == "v2"

    # The operator's next good config recovers it.
    operator.reconcile_until_ready(good, timeout_s=120)
    assert replica_ids(operator.get()) == running


def test_swell_deploy_authenticates_like_the_deploy_job(head: Head, tmp_path: Path) -> None:
    """hello-raycluster.yaml's Job: ``swell deploy`` given the cluster's token as
    RAY_AUTH_MODE=token / RAY_AUTH_TOKEN (from KubeRay's Secret), nothing in argv."""
    config = tmp_path / "serve.yaml"
    config.write_text(yaml.safe_dump(serve_config(version="v2", greeting="bonjour")))
    elsewhere = tmp_path / "runtime"  # no local token file to fall back on
    elsewhere.mkdir(mode=0o700)
    base = {**os.environ, "XDG_RUNTIME_DIR": str(elsewhere)}
    command = [sys.executable, "-m", "swell", "deploy", str(config), "--address", head.admin_url]

    def deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180
        )

    refused = deploy(base)
    assert refused.returncode != 0 and "token" in refused.stderr, refused
    job_env = {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": head.token}
    deployed = deploy(job_env)
    assert deployed.returncode == 0, deployed.stderr
    operator = FakeOperator(head.admin_url, head.token)
    assert operator.ready(operator.get())


def run_probe(port: int) -> subprocess.CompletedProcess[bytes]:
    """KubeRay's worker readiness probe command, as the kubelet runs it (bash -c)."""
    if shutil.which("wget") is None:
        pytest.skip("wget is not installed (.ci/run installs it with apt where it can)")
    return subprocess.run(["bash", "-c", PROBE.format(port=port)], capture_output=True, timeout=30)


def test_the_worker_readiness_probe_passes(head: Head) -> None:
    operator = FakeOperator(head.admin_url, head.token)
    operator.reconcile_until_ready(serve_config(version="v2", greeting="bonjour"), timeout_s=120)
    probe = run_probe(head.port)
    assert probe.returncode == 0 and probe.stdout == b"success\n", probe


def test_the_probe_fails_while_the_node_drains(head: Head, tmp_path: Path) -> None:
    """Runs last: it stops the instance as Kubernetes would (SIGTERM). A request held in
    flight keeps a replica draining; meanwhile the probe fails with "draining", and the held
    request still completes."""
    operator = FakeOperator(head.admin_url, head.token)
    operator.reconcile_until_ready(serve_config(version="v2", greeting="bonjour"), timeout_s=120)
    mark = tmp_path / "arrived"
    held: list[httpx.Response] = []
    holder = threading.Thread(
        target=lambda: held.append(
            httpx.get(f"http://127.0.0.1:{head.port}/?hold_s=4&mark={mark}", timeout=30)
        ),
        name="contract-held-request",
    )
    holder.start()
    try:
        wait_until(mark.exists, 10, "the held request to reach its replica")
        assert head.process is not None
        head.process.send_signal(signal.SIGTERM)  # the pod is deleted
        wait_until(lambda: head.healthz().text == "draining", 10, "healthz to say draining")
        assert head.healthz().status_code == 503
        assert run_probe(head.port).returncode != 0
    finally:
        holder.join(30)
    assert held and held[0].status_code == 200, held
