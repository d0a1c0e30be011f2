"""The chaos scenarios: each runs steady load against a fresh instance while one kind of fault
repeats, and returns what happened. ``tests/chaos`` runs them short and asserts; the bench
(``bench/chaos.py``) runs them long and prints the table.
"""

from __future__ import annotations

import os
import random
import re
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.chaos.load import KINDS, KindReport, Load, LoadPlan
from tests.chaos.service import ChaosService, alive, wait_until


@dataclass
class Outcome:
    fault: str
    faults: int
    reports: dict[str, KindReport]
    facts: dict[str, Any] = field(default_factory=dict)

    def failed(self, kind: str) -> int:
        return self.reports[kind].failed

    def idempotent_unary_failed(self) -> int:
        return sum(r.failed for k, r in self.reports.items() if KINDS[k][2] and not KINDS[k][3])


def _flowing(load: Load, at_least: int = 50) -> None:
    wait_until(lambda: load.total_ok() >= at_least, 60, "load to flow")


def _sleep_between_faults(seconds: float) -> None:
    """The pause between two injected faults (a rate, not a wait for anything)."""
    time.sleep(seconds)


def kill_replicas(service: ChaosService, duration_s: float, every_s: float = 5.0) -> Outcome:
    """SIGKILL a random running replica every ``every_s``; each must be replaced."""
    load = Load(LoadPlan(service.url, stream_workers=1)).start()
    kills = 0
    try:
        _flowing(load)
        began = time.monotonic()
        while time.monotonic() - began < duration_s:
            running = service.running()
            victim = random.choice(sorted(running))
            os.kill(int(running[victim]["pid"]), signal.SIGKILL)
            kills += 1
            _sleep_between_faults(every_s)
        replaced_in = wait_until(lambda: len(service.running()) == 4, 60, "replacements")
    finally:
        reports = load.stop()
    return Outcome("SIGKILL a replica", kills, reports, {"replaced_after_last_s": replaced_in})


def stop_a_replica(service: ChaosService, stopped_s: float) -> Outcome:
    """SIGSTOP one ingress replica for ``stopped_s``, then SIGCONT: taken out, comes back."""
    load = Load(LoadPlan(service.url, stream_workers=1)).start()
    try:
        _flowing(load)
        ingress = {k: v for k, v in service.running().items() if v["deployment"] == "ChaosIngress"}
        victim_id = sorted(ingress)[0]
        pid = int(ingress[victim_id]["pid"])
        os.kill(pid, signal.SIGSTOP)
        served_before = load.total_ok()
        try:
            # Others keep serving while it is stopped.
            wait_until(lambda: load.total_ok() > served_before + 100, 30, "others to serve")
            time.sleep(max(0.0, stopped_s - 1))  # the fault's length, not a readiness wait
        finally:
            os.kill(pid, signal.SIGCONT)

        def serves_again() -> bool:
            answers = {httpx.get(f"{service.url}/unary", timeout=30).json()["replica"]}
            return victim_id in answers

        back_in = wait_until(serves_again, 60, "the stopped replica to serve again")
        kept = victim_id in service.running()
    finally:
        reports = load.stop()
    return Outcome(
        f"SIGSTOP a replica for {stopped_s:.0f} s",
        1,
        reports,
        {"serving_again_after_s": back_in, "same_replica_kept": kept},
    )


def kill_haproxy(service: ChaosService) -> Outcome:
    """SIGKILL the HAProxy worker, then (once it is back) the master."""
    load = Load(LoadPlan(service.url, stream_workers=1)).start()
    downtimes = []
    try:
        _flowing(load)
        before = set(service.running())
        for target in ("worker", "master"):
            pid = service.haproxy_workers()[0] if target == "worker" else service.haproxy_master()
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait_until(lambda pid=pid: not alive(pid), 10, f"the HAProxy {target} to die")
            served = load.total_ok()
            wait_until(lambda s=served: load.total_ok() > s + 5, 30, "serving again")
            downtimes.append(time.monotonic() - killed_at)
            service.remember_pids()
        replicas_kept = set(service.running()) == before
    finally:
        reports = load.stop()
    return Outcome(
        "SIGKILL the HAProxy worker, then the master",
        2,
        reports,
        {
            "serving_again_after_s": [round(d, 2) for d in downtimes],
            "no_replica_restarted": replicas_kept,
        },
    )


def kill_controller(service: ChaosService) -> Outcome:
    """SIGKILL the controller (it has a state dir); a new one adopts everything."""
    load = Load(LoadPlan(service.url, stream_workers=1)).start()
    try:
        _flowing(load)
        before = set(service.running())
        pid = service.controller_pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid), 10, "the controller to die")
        served = load.total_ok()
        wait_until(lambda: load.total_ok() > served + 100, 30, "serving with no controller")
        service.start()
        adopted = set(service.running()) == before
        served = load.total_ok()
        wait_until(lambda: load.total_ok() > served + 100, 30, "serving after recovery")
    finally:
        reports = load.stop()
    return Outcome("SIGKILL the controller", 1, reports, {"replicas_adopted": adopted})


def rolling_update(service: ChaosService, stream_s: float) -> Outcome:
    """Deploy a new version of every deployment while streams of ``stream_s`` run."""
    chunks = max(10, int(stream_s / 0.1))
    load = Load(
        LoadPlan(service.url, stream_workers=2, stream_chunks=chunks, stream_gap_s=0.1)
    ).start()
    try:
        _flowing(load)
        before = set(service.running())
        service.deploy("v2")

        def rolled() -> bool:
            running = service.running()
            return len(running) == 4 and not (set(running) & before)

        rolled_in = wait_until(rolled, 120 + stream_s, "every replica to be replaced")
        version = httpx.get(f"{service.url}/unary", timeout=30).json()["version"]
    finally:
        reports = load.stop()
    return Outcome(
        f"rolling update of every deployment ({stream_s:.0f} s streams)",
        1,
        reports,
        {"rolled_in_s": round(rolled_in, 1), "serving_version": version},
    )


_ATTEMPTS = re.compile(r"(\d+) attempts to start a replica failed")


def dies_while_starting(service: ChaosService, watch_s: float) -> Outcome:
    """Beside the chaos app, an app whose replica dies in its constructor, every time."""
    load = Load(LoadPlan(service.url, stream_workers=1)).start()
    try:
        _flowing(load)
        broken = {
            "name": "broken",
            "route_prefix": "/broken",
            "import_path": "tests.chaos.chaos_app:dies_while_starting",
        }
        service.deploy("v1", extra_apps=[broken])
        began = time.monotonic()

        def attempts() -> int:
            message = service.status()["applications"].get("broken", {}).get("message", "")
            found = _ATTEMPTS.search(message)
            return int(found.group(1)) if found else 0

        wait_until(lambda: attempts() >= 3, 60, "three failed attempts")
        time.sleep(max(0.0, watch_s - (time.monotonic() - began)))  # the window observed
        message = service.status()["applications"]["broken"]["message"]
        count = attempts()
        status = service.app_status("broken")
    finally:
        reports = load.stop()
    return Outcome(
        "a replica that dies while starting, every time",
        count,
        reports,
        {
            "attempts_in_window": count,
            "window_s": watch_s,
            "broken_status": status,
            "says_why": "before it was ready" in message,
        },
    )


def fresh_service(workdir: Path) -> ChaosService:
    workdir.mkdir(parents=True, exist_ok=True)
    service = ChaosService(workdir)
    service.start()
    service.deploy("v1")
    return service
