"""Applications for the hardening tests: control paths, bodies, process lifecycles."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from starlette.requests import Request

import swell


@swell.deployment(num_replicas=1, user_config={"marker": ""})
class CountsHealthChecks:
    """Records every check_health() call in a file, so a test sees whether one ran."""

    def __init__(self) -> None:
        self.marker: Path | None = None

    def reconfigure(self, config: dict[str, str]) -> None:
        self.marker = Path(config["marker"]) if config.get("marker") else None

    def check_health(self) -> None:
        if self.marker is not None:
            with self.marker.open("a") as out:
                out.write("health\n")

    async def __call__(self, request: Request) -> dict[str, Any]:
        return {
            "user_code": True,
            "path": request.url.path,
            "raw": request.scope["raw_path"].decode(),
        }


@swell.deployment(num_replicas=1)
class BodyReader:
    """Streams the request body: records each chunk's arrival in a file as it comes."""

    async def __call__(self, request: Request) -> dict[str, Any]:
        log = Path(request.query_params["log"])
        total, chunks = 0, 0
        async for chunk in request.stream():
            if chunk:
                chunks += 1
                total += len(chunk)
                with log.open("a") as out:
                    out.write(f"{total}\n")
        return {"bytes": total, "chunks": chunks}


@swell.deployment(num_replicas=1)
class FailingModel:
    def explode(self) -> None:
        raise KeyError("secret-internal-detail")


@swell.deployment(num_replicas=1)
class CallsFailingModel:
    def __init__(self, model: Any) -> None:
        self.model = model

    async def __call__(self, request: Request) -> str:
        await self.model.explode.remote()
        return "unreachable"


@swell.deployment(num_replicas=1)
class SpawnsAWorker:
    """Starts a child process that inherits every descriptor (as an engine's workers may),
    and records its pid; its __del__ leaves a mark when the replica stops."""

    def __init__(self, marks: str) -> None:
        self.marks = Path(marks)
        self.worker = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)"], close_fds=False
        )
        with (self.marks / "workers").open("a") as out:
            out.write(f"{self.worker.pid}\n")

    def __del__(self) -> None:
        with (self.marks / "deleted").open("a") as out:
            out.write("deleted\n")

    async def __call__(self, request: Request) -> int:
        return self.worker.pid


@swell.deployment(num_replicas=1, max_ongoing_requests=8)
class BusySync:
    """Sync handlers that hold every request thread until a gate file appears; a sync
    health check."""

    def __call__(self, request: Request) -> str:
        gate = Path(request.query_params["gate"])
        deadline = time.monotonic() + 30
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return "done"

    def check_health(self) -> None:
        time.sleep(0.01)


health_counting_app = CountsHealthChecks.bind()
body_reader_app = BodyReader.bind()
failing_compose_app = CallsFailingModel.bind(FailingModel.bind())
busy_sync_app = BusySync.bind()


def spawning_app(args: dict[str, str]) -> swell.Application:
    return SpawnsAWorker.bind(args["marks"])


@swell.deployment(num_replicas=3, ray_actor_options={"num_gpus": 0.5})
class HalfAGpu:
    """Says which GPUs it was given."""

    async def __call__(self, request: Request) -> str:
        import os

        return os.environ.get("CUDA_VISIBLE_DEVICES", "")

    def devices(self) -> str:
        import os

        return os.environ.get("CUDA_VISIBLE_DEVICES", "")


half_a_gpu_app = HalfAGpu.bind()
