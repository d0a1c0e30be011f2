"""Whole-config deploys (``PUT /api/serve/applications/``, ``swell deploy``).

A PUT is answered as soon as the config's schema is valid; importing the applications (in a
fresh process) and applying them continue in the background, one deploy at a time, the newest
config winning over one still waiting. Until it is applied the config's applications show as
DEPLOYING (NOT_STARTED for a new application while an earlier deploy still runs), and if it
cannot be imported, as DEPLOY_FAILED with the reason, while whatever was running keeps serving
untouched. Putting the config already in force again changes nothing: KubeRay re-PUTs its
config whenever it is unsure, every 2 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cloudpickle

from swell._controller.controller import Controller
from swell._controller.model import DeploymentTarget
from swell.config import RunOptions, ServeConfig
from swell.exceptions import ConfigError

logger = logging.getLogger("swell.controller")

PREPARE_DEADLINE_S = 300.0
Prepared = list[tuple[RunOptions, list[DeploymentTarget]]]


@dataclass
class _PendingDeploy:
    generation: int
    document: dict[str, Any]
    app_names: list[str]
    route_prefixes: dict[str, str | None]
    submitted_at: float = field(default_factory=time.time)
    error: str | None = None
    # Whether its turn came (the deploy before it finished).
    started: bool = False


async def prepare_in_subprocess(config: ServeConfig, work_dir: Path) -> Prepared:
    """Import the config's applications in a fresh process; its errors become ConfigError.

    The result comes back through a file of its own, so whatever the user's modules print while
    they import cannot corrupt it.
    """
    with tempfile.TemporaryDirectory(dir=work_dir, prefix="prepare-") as scratch:
        result_path = Path(scratch) / "result.pickle"
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "swell._prepare",
            str(result_path),
            # What this process can import (``swell run --app-dir``), the import can too.
            *sys.path,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await asyncio.wait_for(
                process.communicate(config.model_dump_json().encode()), PREPARE_DEADLINE_S
            )
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise
        try:
            outcome, value = cloudpickle.loads(result_path.read_bytes())
        except (OSError, EOFError, ValueError):
            tail = output.decode(errors="replace").strip()[-2000:]
            raise ConfigError(
                f"importing the config's applications failed (exit status "
                f"{process.returncode}) without a result; its output:\n{tail}"
            ) from None
    if outcome != "ok":
        raise ConfigError(str(value))
    prepared: Prepared = value
    return prepared


class ConfigDeployer:
    """Applies configs to one controller, one at a time; see the module docstring."""

    def __init__(
        self,
        controller: Controller,
        work_dir: Path,
        spawn: Callable[[Coroutine[Any, Any, Any], str], Any],
    ) -> None:
        self._controller = controller
        self._work_dir = work_dir
        self._spawn = spawn
        self._lock = asyncio.Lock()
        self._generation = 0
        self._preparing: asyncio.Task[Prepared] | None = None
        self.applied: dict[str, Any] | None = None
        self.pending: _PendingDeploy | None = None

    def submit(self, config: ServeConfig) -> None:
        """Start deploying ``config`` (schema already valid); returns at once."""
        document = config.model_dump(mode="json", exclude_unset=True)
        pending = self.pending
        if pending is not None and pending.error is None and pending.document == document:
            return  # already on its way
        if pending is None and document == self.applied:
            return  # already in force
        if config.target_capacity not in (None, 100):
            logger.warning(
                "target_capacity=%s: swell runs every replica whatever the target capacity "
                "(it is shown in the status, not applied)",
                config.target_capacity,
            )
        self._generation += 1
        if self._preparing is not None:
            self._preparing.cancel()  # importing a config that is already out of date
        self.pending = _PendingDeploy(
            self._generation,
            document,
            [app.name for app in config.applications],
            {app.name: app.route_prefix for app in config.applications},
        )
        self._spawn(self._apply(self._generation, config), f"swell-deploy-{self._generation}")

    async def _apply(self, generation: int, config: ServeConfig) -> None:
        async with self._lock:
            if generation != self._generation:
                return  # a newer config arrived while this one waited
            if self.pending is not None and self.pending.generation == generation:
                self.pending.started = True
            self._preparing = asyncio.get_running_loop().create_task(
                prepare_in_subprocess(config, self._work_dir), name=f"swell-prepare-{generation}"
            )
            try:
                prepared = await self._preparing
            except asyncio.CancelledError:
                if generation != self._generation:
                    return  # superseded
                raise
            except (ConfigError, TimeoutError) as error:
                self._fail(
                    generation, str(error) or f"importing took longer than {PREPARE_DEADLINE_S}s"
                )
                return
            finally:
                self._preparing = None
            if generation != self._generation:
                return
            try:
                await self._deploy(prepared, declarative=True)
            except ConfigError as error:
                self._fail(generation, str(error))
                return
            if self.pending is not None and self.pending.generation == generation:
                self.applied = self.pending.document
                self.pending = None

    def _fail(self, generation: int, message: str) -> None:
        logger.error("deploy %d failed: %s", generation, message)
        if self.pending is not None and self.pending.generation == generation:
            self.pending.error = message

    async def deploy(self, prepared: Prepared, declarative: bool = False) -> None:
        """Hand prepared applications to the controller, after any deploy in progress."""
        async with self._lock:
            await self._deploy(prepared, declarative)

    async def _deploy(self, prepared: Prepared, declarative: bool) -> None:
        controller = self._controller
        for options, targets in prepared:
            await controller.deploy_app(options.name, options.route_prefix, targets)
        if declarative:
            keep = {options.name for options, _ in prepared}
            for name in [n for n in controller.app_names() if n not in keep]:
                await controller.delete_app(name)

    async def delete_all(self) -> None:
        self._generation += 1  # whatever was waiting is superseded
        if self._preparing is not None:
            self._preparing.cancel()
        self.pending = None
        async with self._lock:
            for name in self._controller.app_names():
                await self._controller.delete_app(name)
            self.applied = None

    def target_capacity(self) -> float | None:
        """The target capacity of the newest config submitted (shown, not applied)."""
        document = self.pending.document if self.pending is not None else self.applied
        value = (document or {}).get("target_capacity")
        return float(value) if value is not None else None

    def overlay(self, applications: dict[str, Any]) -> None:
        """Show a config not yet applied: its apps NOT_STARTED (new ones, waiting their turn)
        or DEPLOYING, or DEPLOY_FAILED with why."""
        pending = self.pending
        if pending is None:
            return
        for name in pending.app_names:
            if pending.error is None and not pending.started and name not in applications:
                status = "NOT_STARTED"
                message = "waiting for the deploy in progress to finish"
            elif pending.error is None:
                status = "DEPLOYING"
                message = "importing the config's applications"
            else:
                status = "DEPLOY_FAILED"
                message = f"the deployed config could not be applied: {pending.error}"
                if name in applications:
                    message += "\nThe previous version keeps serving."
            app = applications.setdefault(
                name,
                {
                    "name": name,
                    "route_prefix": pending.route_prefixes.get(name),
                    "last_deployed_time_s": pending.submitted_at,
                    "deployments": {},
                },
            )
            app["status"] = status
            app["message"] = message
