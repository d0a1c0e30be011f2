"""Request ids and log files, through real HAProxy and real replica processes."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

import swell
from swell import api
from swell._logging.files import CONTROLLER_FILE, HAPROXY_FILE, replica_file_name
from tests.integration.conftest import Swell, haproxy_binaries, wait_until
from tests.integration.logging_apps import Ingress, Model

REPO_ROOT = Path(__file__).resolve().parents[2]


def _status() -> dict[str, Any]:
    instance = api._instance
    assert instance is not None
    return instance.status()


def _logs_dir() -> Path:
    logs_dir = _status()["logs_dir"]
    assert logs_dir, "the status names the logs directory"
    return Path(logs_dir)


def _replica_file(app_name: str, deployment: str, directory: Path | None = None) -> Path:
    status = _status()
    replicas = status["applications"][app_name]["deployments"][deployment]["replicas"]
    assert len(replicas) == 1
    return (directory or _logs_dir()) / replica_file_name(app_name, replicas[0]["replica_id"])


def _lines_with(path: Path, *needles: str) -> list[str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def _wait_for_line(path: Path, *needles: str) -> str:
    wait_until(lambda: _lines_with(path, *needles), 15, f"a line with {needles} in {path.name}")
    return _lines_with(path, *needles)[0]


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_one_request_id_reaches_haproxy_ingress_and_model_logs(serve: Swell) -> None:
    swell.run(Ingress.bind(Model.bind()), name="ids")
    ingress_file = _replica_file("ids", "Ingress")
    model_file = _replica_file("ids", "Model")
    haproxy_file = _logs_dir() / HAPROXY_FILE

    # No id sent: HAProxy makes one, and every part of the request sees that one.
    answer = serve.client.get("/", params={"marker": "made"})
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    body = answer.json()
    assert body["ingress"] == body["model"] == body["model_async"] == request_id
    assert body["ingress_context"] == [request_id, "ids", "/"]
    assert body["model_route"] == "/"
    _wait_for_line(haproxy_file, f"request_id={request_id}", " GET /?marker=made 200 ", "Tw=")
    _wait_for_line(ingress_file, request_id, "GET / 200 ")
    _wait_for_line(model_file, request_id, "CALL request_id OK ")
    _wait_for_line(model_file, request_id, "CALL request_id_async OK ")
    # The user's own log lines and prints carry app, deployment, replica and request id.
    replica_id = model_file.name.removesuffix(".log").split("+", 1)[1]
    line = _wait_for_line(model_file, "model info made")
    assert f"[ids/Model {replica_id} {request_id}]" in line
    _wait_for_line(model_file, request_id, "model print made")
    # The controller's INFO lines go to its own file.
    _wait_for_line(_logs_dir() / CONTROLLER_FILE, f"replica {replica_id} of ids/Model is running")

    # A failed request: its id in the body, and on the logged traceback.
    failed = serve.client.get("/", params={"marker": "fail"})
    failed_id = failed.headers["x-request-id"]
    assert failed.status_code == 500
    assert failed.text == f"Internal Server Error (request id {failed_id})"
    _wait_for_line(ingress_file, failed_id, f"request {failed_id} failed")
    text = ingress_file.read_text()
    assert (
        "ValueError: the ingress failed on purpose" in text.split(f"request {failed_id} failed")[1]
    )

    # A client's own id is kept end to end.
    sent = f"client-{uuid.uuid4().hex[:8]}"
    answer = serve.client.get("/", params={"marker": "sent"}, headers={"x-request-id": sent})
    assert answer.headers["x-request-id"] == sent
    assert answer.json()["ingress"] == answer.json()["model"] == sent
    _wait_for_line(haproxy_file, f"request_id={sent}")
    _wait_for_line(ingress_file, sent, "GET / 200 ")
    _wait_for_line(model_file, sent, "CALL request_id OK ")


def test_json_encoding_has_rays_field_names(serve: Swell, tmp_path: Path) -> None:
    own_dir = tmp_path / "model-logs"  # the Model's own logs_dir; the Ingress gets the app's
    logging_config = {"encoding": "JSON", "additional_log_standard_attrs": ["name"]}
    model = Model.options(logging_config={**logging_config, "logs_dir": str(own_dir)})
    swell.run(Ingress.bind(model.bind()), name="json", logging_config=logging_config)
    model_file = _replica_file("json", "Model", own_dir)
    assert _replica_file("json", "Ingress").exists()
    answer = serve.client.get("/", params={"marker": "structured"})
    request_id = answer.headers["x-request-id"]
    _wait_for_line(model_file, "model info structured")
    records = [json.loads(line) for line in model_file.read_text().splitlines()]  # all JSON
    [record] = [r for r in records if r["message"] == "model info structured"]
    replica_id = model_file.name.removesuffix(".log").split("+", 1)[1]
    assert record["application"] == "json"
    assert record["deployment"] == "Model"
    assert record["replica"] == replica_id
    assert record["request_id"] == request_id
    assert record["route"] == "/"
    assert record["levelname"] == "INFO"
    assert record["name"] == "logging_apps"
    assert record["component_name"] == "replica"
    assert isinstance(record["timestamp_ns"], int) and record["asctime"]
    [access] = [r for r in records if r["message"].startswith("CALL request_id OK")]
    assert access["request_id"] == request_id
    # swell logs finds a deployment's own logs_dir too.
    instance = api._instance
    assert instance is not None
    shown = instance.admin.read_logs("json", "Model", None)["records"]
    assert any("model info structured" in line for line in shown)


def test_log_level_filters_and_access_log_can_be_turned_off(serve: Swell) -> None:
    app = Ingress.options(logging_config={"log_level": "WARNING"}).bind(
        Model.options(logging_config={"enable_access_log": False}).bind()
    )
    swell.run(app, name="quiet")
    ingress_file = _replica_file("quiet", "Ingress")
    model_file = _replica_file("quiet", "Model")
    answer = serve.client.get("/", params={"marker": "filtered"})
    assert answer.status_code == 200
    request_id = answer.headers["x-request-id"]
    # Both lines are written before the answer leaves: checking after it is not a race.
    assert _lines_with(ingress_file, request_id, "ingress warning filtered")
    assert not _lines_with(ingress_file, "ingress info filtered")
    assert _lines_with(model_file, request_id, "model info filtered")
    # The model's access line would be written before its answer was sent: there is none.
    assert not _lines_with(model_file, "CALL ")


def test_swell_logs_follow_shows_new_lines_and_stops_cleanly(serve: Swell) -> None:
    swell.run(Ingress.bind(Model.bind()), name="tail")
    instance = api._instance
    assert instance is not None
    address = f"http://127.0.0.1:{instance.admin_port}"
    command = [sys.executable, "-m", "swell", "logs", "tail", "--follow", "-a", address]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")}
    follower = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        marker = f"followed-{uuid.uuid4().hex[:8]}"
        answer = serve.client.get("/", params={"marker": marker})
        request_id = answer.headers["x-request-id"]
        assert follower.stdout is not None
        # The model's line, and HAProxy's line for the same request (the app's backend), in
        # swell's time; they may come in one read or in two.
        wanted = (f"model info {marker}", f"request_id={request_id}")
        seen = _read_until(follower.stdout, lambda text: all(w in text for w in wanted), 20)
        assert all(w in seen for w in wanted), seen
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(10)
    assert follower.stderr is not None
    assert b"Traceback" not in follower.stderr.read()

    # Without --follow: what is there, for one deployment only, then it exits.
    printed = subprocess.run(
        [sys.executable, "-m", "swell", "logs", "tail", "Model", "-a", address],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert printed.returncode == 0, printed.stderr
    assert f"model info {marker}" in printed.stdout
    assert f"ingress info {marker}" not in printed.stdout
    times = [line[:23] for line in printed.stdout.splitlines() if line[:4].isdigit()]
    assert times == sorted(times)


def _read_until(stream: Any, done: Any, timeout_s: float) -> str:
    """What ``stream`` printed until ``done(text)`` or the deadline (raw reads: no buffer may
    hold lines that select() cannot see)."""
    fd = stream.fileno()
    selector = selectors.DefaultSelector()
    selector.register(fd, selectors.EVENT_READ)
    data = b""
    deadline = time.monotonic() + timeout_s
    try:
        while not done(data.decode(errors="replace")) and time.monotonic() < deadline:
            if selector.select(timeout=max(0.0, deadline - time.monotonic())):
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                data += chunk
    finally:
        selector.close()
    return data.decode(errors="replace")
