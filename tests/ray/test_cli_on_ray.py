"""``swell start --address auto`` (RAY_ADDRESS names the cluster), ``swell deploy``, ``swell
shutdown``: the service path on a Ray cluster, as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from tests.integration.conftest import pid_alive
from tests.ray.conftest import RayCluster, http_port, wait_until

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(180)

REPO_ROOT = Path(__file__).resolve().parents[2]


def swell_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _named_actors() -> set[str]:
    return {
        entry["name"]
        for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["namespace"] == "swell"
    }


def test_start_deploy_shutdown_on_ray(ray_cluster: RayCluster, tmp_path: Path) -> None:
    nodes = ray_cluster.nodes
    admin = f"http://127.0.0.1:{http_port()}"
    env = {**os.environ, "RAY_ADDRESS": ray_cluster.cluster.address}
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "applications": [
                    {
                        "name": "cli",
                        "route_prefix": "/",
                        "import_path": "tests.ray.apps:where_app",
                        "deployments": [{"name": "Where", "num_replicas": 2}],
                    }
                ]
            }
        )
    )
    started = swell_cli(
        "start",
        "--address",
        "auto",
        "--port",
        str(nodes["head"].port),
        "--admin-port",
        admin.rsplit(":", 1)[1],
        "--log-file",
        str(tmp_path / "swell.log"),
        env=env,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    pid = None
    try:
        status = json.loads(swell_cli("status", "--json", "--address", admin, env=env).stdout)
        pid = status["controller_info"]["pid"]
        assert set(status["proxies"]) == {node.node_id for node in nodes.values()}

        deployed = swell_cli("deploy", str(config), "--address", admin, env=env)
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        for node in nodes.values():
            assert httpx.get(node.url + "/", timeout=30).json()["replica"].startswith("Where-")
        shown = swell_cli("status", "--address", admin, env=env).stdout
        assert shown.count(" node=") == 2, shown  # each replica with the node it runs on

        ray.init(address=ray_cluster.cluster.address)
        assert len([n for n in _named_actors() if n.startswith("SWELL_REPLICA-cli-")]) == 2
        assert len([n for n in _named_actors() if n.startswith("SWELL_PROXY-")]) == 3

        stopped = swell_cli("shutdown", "--address", admin, env=env)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        wait_until(lambda: not _named_actors(), 30, "swell's actors to be gone")
    finally:
        if pid is not None and pid_alive(pid):
            os.kill(pid, 9)
