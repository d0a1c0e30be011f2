"""Processes: exits seen through the process, whole groups stopped, __del__ run, identities
checked before adoption (real replica processes)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import swell
from swell._engines.base import ReadyInfo
from swell._engines.local import LocalEngine
from swell._procs import process_start_time
from tests.integration import hardening_apps
from tests.integration.conftest import Swell, pid_alive, wait_until


def workers(marks: Path) -> list[int]:
    path = marks / "workers"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def replica_ids(deployment: str = "SpawnsAWorker") -> set[str]:
    replicas = swell.status().applications["default"].deployments[deployment].replicas
    return {r.replica_id for r in replicas if r.state == "RUNNING"}


def test_a_killed_replica_is_seen_and_its_workers_end_with_it(serve: Swell, tmp_path: Path) -> None:
    swell.run(hardening_apps.spawning_app({"marks": str(tmp_path)}))
    [replica] = swell.status().applications["default"].deployments["SpawnsAWorker"].replicas
    [worker] = workers(tmp_path)
    assert serve.client.get("/").json() == worker
    # The worker holds every descriptor the replica had (its events pipe too): the exit must
    # be seen through the process itself.
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(worker), 20, "the dead replica's worker to be killed")
    wait_until(
        lambda: bool(replica_ids()) and replica.replica_id not in replica_ids(),
        30,
        "a replacement replica",
    )
    assert serve.client.get("/").json() == workers(tmp_path)[-1]


def test_stopping_a_replica_runs_del_once_and_ends_its_workers(
    serve: Swell, tmp_path: Path
) -> None:
    swell.run(hardening_apps.spawning_app({"marks": str(tmp_path)}))
    [worker] = workers(tmp_path)
    swell.delete("default")
    assert (tmp_path / "deleted").read_text() == "deleted\n"
    wait_until(lambda: not pid_alive(worker), 20, "the worker to be killed")


def test_adoption_checks_the_process_identity_not_just_the_pid() -> None:
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_start_time(bystander.pid)
        assert started is not None

        async def adopt(start_time: int | None) -> bool:
            engine = LocalEngine()
            ready = ReadyInfo("127.0.0.1", 1, bystander.pid, start_time=start_time)
            adopted = engine.adopt("r1", ready) is not None
            # Forget it without signalling: it is not ours to stop.
            engine._replicas.clear()
            return adopted

        # A pid reused by another process (other start time), or a checkpoint without an
        # identity, is never adopted, so never signalled.
        assert asyncio.run(adopt(started + 1)) is False
        assert asyncio.run(adopt(None)) is False
        assert asyncio.run(adopt(started)) is True
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)
