"""A `swell start` instance for the chaos suite: started, deployed, inspected and stopped by PID.

Used by ``tests/chaos`` (short runs in CI) and ``bench/chaos.py`` (long runs).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from swell._private_files import find_admin_token
from tests.integration.conftest import children_of, free_port
from tests.integration.conftest import pid_alive as alive

REPO_ROOT = Path(__file__).resolve().parents[2]
POLL_S = 0.05


def wait_until(condition: Any, timeout_s: float, what: str) -> float:
    """Poll until true; returns the seconds it took; fails after ``timeout_s``."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if condition():
            return time.monotonic() - began
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


class ChaosService:
    """One detached swell instance (with a state dir) serving the chaos app."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.admin_port = free_port()
        self.state_dir = workdir / "state"
        self.log = workdir / "swell.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = f"http://127.0.0.1:{self.admin_port}"
        self.seen_pids: set[int] = set()

    # Lifecycle ----------------------------------------------------------------------------

    def cli(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swell", *args],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def start(self) -> None:
        started = self.cli(
            "start",
            "--port",
            str(self.port),
            "--admin-port",
            str(self.admin_port),
            "--state-dir",
            str(self.state_dir),
            "--log-file",
            str(self.log),
        )
        assert started.returncode == 0, started.stderr + self.log_tail()
        self.remember_pids()

    def deploy(self, version: str = "v1", extra_apps: list[dict[str, Any]] | None = None) -> None:
        config = {
            "http_options": {"port": self.port},
            "applications": [
                {
                    "name": "chaos",
                    "route_prefix": "/",
                    "import_path": "tests.chaos.chaos_app:build",
                    "args": {"version": version},
                },
                *(extra_apps or []),
            ],
        }
        path = self.workdir / f"serve-{version}.yaml"
        path.write_text(yaml.safe_dump(config))
        deployed = self.cli("deploy", str(path), "--address", self.address)
        assert deployed.returncode == 0 or extra_apps, deployed.stderr + self.log_tail()
        self.remember_pids()

    def stop(self) -> None:
        self.remember_pids()
        self.cli("shutdown", "--address", self.address, timeout_s=180)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(alive(p) for p in self.seen_pids):
            time.sleep(POLL_S)
        for pid in self.seen_pids:  # only processes this instance started
            if alive(pid):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self) -> str:
        try:
            return "\n" + "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])
        except OSError:
            return ""

    # Inspection ---------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        token = find_admin_token(self.admin_port)
        response = httpx.get(
            f"{self.address}/api/serve/applications/",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )
        response.raise_for_status()
        document: dict[str, Any] = response.json()
        return document

    def controller_pid(self) -> int:
        return int(self.status()["controller_info"]["pid"])

    def haproxy_master(self) -> int:
        [proxy] = self.status()["proxies"].values()
        return int(proxy["pid"])

    def haproxy_workers(self) -> list[int]:
        return [pid for pid in children_of(self.haproxy_master()) if alive(pid)]

    def replicas(self, app: str = "chaos") -> dict[str, dict[str, Any]]:
        """Every replica of the app, by id, with its deployment, state and pid."""
        found: dict[str, dict[str, Any]] = {}
        application = self.status()["applications"].get(app, {})
        for name, deployment in application.get("deployments", {}).items():
            for replica in deployment["replicas"]:
                found[replica["replica_id"]] = {**replica, "deployment": name}
        return found

    def running(self, app: str = "chaos") -> dict[str, dict[str, Any]]:
        return {k: v for k, v in self.replicas(app).items() if v["state"] == "RUNNING"}

    def app_status(self, app: str = "chaos") -> str:
        return str(self.status()["applications"].get(app, {}).get("status", "MISSING"))

    def remember_pids(self) -> None:
        try:
            status = self.status()
        except (httpx.HTTPError, AssertionError):
            return
        self.seen_pids.add(int(status["controller_info"]["pid"]))
        for proxy in status.get("proxies", {}).values():
            if proxy.get("pid"):
                self.seen_pids.add(int(proxy["pid"]))
                self.seen_pids.update(children_of(int(proxy["pid"])))
        for application in status["applications"].values():
            for deployment in application.get("deployments", {}).values():
                self.seen_pids.update(r["pid"] for r in deployment["replicas"] if r.get("pid"))
