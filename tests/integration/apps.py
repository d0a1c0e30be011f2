"""Applications the integration tests serve; importable, so replicas load them by reference."""

from __future__ import annotations

import asyncio
import gc
import operator
import os
import signal
import threading
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, cast

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

import swell
from swell import Deployment, DeploymentHandle


@swell.deployment(num_replicas=2, max_ongoing_requests=100)
class WhoAmI:
    """Answers with the replica that served the request."""

    def __init__(self, greeting: str, punctuation: str = "!") -> None:
        self.greeting = greeting
        self.punctuation = punctuation

    async def __call__(self, request: Request) -> dict[str, Any]:
        context = swell.get_replica_context()
        return {
            "message": f"{self.greeting}{self.punctuation}",
            "replica": context.replica_id,
            "pid": os.getpid(),
            "path": request.url.path,
            "root_path": request.scope.get("root_path", ""),
        }


@swell.deployment
def plain_text(request: Request) -> str:
    return f"text at {request.url.path}"


@swell.deployment(num_replicas=1)
class Streamer:
    """Sends chunk 0, then waits for the client's go-ahead file before each next chunk.

    If anything buffered the stream, the client would never see chunk 0 and never write the
    file, so the test would time out instead of passing.
    """

    async def __call__(self, request: Request) -> StreamingResponse:
        gate = Path(request.query_params["gate"])
        count = int(request.query_params.get("n", "3"))

        async def chunks() -> AsyncIterator[bytes]:
            for index in range(count):
                if index > 0:
                    marker = gate.with_name(f"{gate.name}.{index}")
                    deadline = time.monotonic() + 10
                    while not marker.exists():
                        if time.monotonic() > deadline:
                            yield b"timeout\n"
                            return
                        await asyncio.sleep(0.01)
                yield f"chunk {index}\n".encode()

        return StreamingResponse(chunks(), media_type="text/plain")


@swell.deployment(num_replicas=1)
class EndlessStream:
    """Streams until the client goes away; marks when it started and when it was stopped."""

    async def __call__(self, request: Request) -> StreamingResponse:
        marker = Path(request.query_params["marker"])

        async def chunks() -> AsyncIterator[bytes]:
            marker.touch()
            try:
                while True:
                    yield b"chunk\n"
                    await asyncio.sleep(0.01)
            finally:
                Path(f"{marker}.stopped").touch()

        return StreamingResponse(chunks(), media_type="text/plain")


@swell.deployment(num_replicas=1, max_ongoing_requests=10)
class SyncBlocking:
    """A sync handler that blocks until a second request releases it: only works off-loop."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def __call__(self, request: Request) -> str:
        if request.query_params.get("role") == "release":
            self.released.set()
            return "released"
        return "woken" if self.released.wait(10) else "timed out"


class BrokenModel(Exception):
    pass


@swell.deployment
class FailsToStart:
    def __init__(self) -> None:
        raise BrokenModel("weights file is corrupt")

    def __call__(self, request: Request) -> str:
        return "unreachable"


@swell.deployment(user_config={"threshold": 3})
class Configured:
    """reconfigure() and check_health() are called; the various return types work."""

    def __init__(self) -> None:
        self.threshold = 0
        self.health_checks = 0

    def reconfigure(self, config: dict[str, Any]) -> None:
        self.threshold = config["threshold"]

    def check_health(self) -> None:
        self.health_checks += 1

    async def __call__(self, request: Request) -> Any:
        kind = request.query_params.get("kind")
        if kind == "bytes":
            return b"\x00\x01raw"
        if kind == "response":
            return PlainTextResponse("teapot", status_code=418)
        if kind == "list":
            return [1, 2, 3]
        if kind == "error":
            raise ValueError("bad input value")
        return {"threshold": self.threshold, "health_checks": self.health_checks}


@swell.deployment(num_replicas=1, max_ongoing_requests=1)
class OneAtATime:
    """Holds each request until its gate file appears, so a test can fill the replica."""

    async def __call__(self, request: Request) -> Response:
        gate = Path(request.query_params["gate"])
        deadline = time.monotonic() + 10
        while not gate.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return PlainTextResponse("done")


fastapi_app = FastAPI()


@swell.deployment
@swell.ingress(fastapi_app)
class FastAPIIngress:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @fastapi_app.get("/hello/{name}")
    def hello(self, name: str, excited: bool = False) -> dict[str, str]:
        return {"message": f"{self.prefix} {name}{'!' if excited else ''}"}

    @fastapi_app.post("/items")
    async def create(self, item: dict[str, int]) -> dict[str, int]:
        return {"total": sum(item.values())}


whoami_app = WhoAmI.bind("Hello", punctuation="?")
text_app = plain_text.bind()


@swell.deployment
def gc_state() -> dict[str, int]:
    """How many objects the replica froze out of the collector's sight at startup."""
    return {"frozen": gc.get_freeze_count()}


gc_state_app = gc_state.bind()
stream_app = Streamer.bind()
endless_stream_app = EndlessStream.bind()
sync_app = SyncBlocking.bind()
failing_app = FailsToStart.bind()
configured_app = Configured.bind()
one_at_a_time_app = OneAtATime.bind()
fastapi_ingress_app = FastAPIIngress.bind("Hi")


@swell.deployment
def env_reader(request: Request) -> dict[str, str | None]:
    return {"greeting": os.environ.get("SWELL_TEST_GREETING"), "cwd": os.getcwd()}


def build_greeter(args: dict[str, Any]) -> swell.Application:
    """An application builder: a config file's ``args`` become its argument."""
    return WhoAmI.bind(args.get("greeting", "Hey"), punctuation=args.get("punctuation", "."))


env_app = env_reader.bind()


class Unloadable:
    """Pickles fine; unpickling it raises ZeroDivisionError, in whichever process does it."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (operator.truediv, (1, 0))


@swell.deployment(num_replicas=2)
class Model:
    """The model side of the composition tests."""

    def __init__(self) -> None:
        self.cancelled = 0
        self.produced = 0

    def predict(self, x: list[float]) -> float:
        return sum(x)

    def add(self, a: float, b: float) -> float:
        return a + b

    async def tokens(self, n: int) -> AsyncIterator[str]:
        for i in range(n):
            yield f"tok{i} "

    def whoami(self) -> str:
        return swell.get_replica_context().replica_id

    def fail(self, message: str) -> None:
        raise KeyError(message)

    def echo_size(self, payload: bytes) -> int:
        return len(payload)

    def echo(self, payload: bytes) -> bytes:
        return payload

    async def hang(self, marker: str) -> str:
        Path(marker).touch()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            Path(marker + ".cancelled").touch()
            raise
        return "finished"

    async def firehose(self, count: int, size: int) -> AsyncIterator[bytes]:
        for _ in range(count):
            self.produced += 1
            yield b"x" * size

    def produced_so_far(self) -> int:
        return self.produced

    def unloadable(self) -> Unloadable:
        return Unloadable()


@swell.deployment
class Composer:
    def __init__(self, model: Any) -> None:
        self.model = model

    async def __call__(self, request: Request) -> Any:
        if request.url.path == "/hang":
            return await self.model.hang.remote(request.query_params["marker"])
        body = await request.json()
        a = self.model.predict.remote(body["x"])
        b = self.model.predict.remote([await a, 1.0])
        # A response passed straight into another call: chained without awaiting it here.
        chained = self.model.add.remote(self.model.predict.remote([1.0, 2.0]), b=0.5)
        return {"y": await b, "chained": await chained}


composed_app = Composer.bind(Model.bind())


@swell.deployment(max_ongoing_requests=1, max_queued_requests=1)
class Gated:
    """Holds each call until its gate file exists: fills a replica on purpose."""

    async def wait(self, gate: str) -> str:
        deadline = time.monotonic() + 20
        while not Path(gate).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return "opened"


@swell.deployment(max_ongoing_requests=100)
class GateCaller:
    def __init__(self, gated: Any) -> None:
        self.gated = gated

    async def __call__(self, request: Request) -> str:
        result: str = await self.gated.wait.remote(request.query_params["gate"])
        return result


gated_app = GateCaller.bind(Gated.bind())
single_model_app = Model.options(num_replicas=1).bind()


@swell.deployment(
    num_replicas=2,
    max_ongoing_requests=100,
    # Short: a replica that kept admitting calls while it stops would cut them off.
    graceful_shutdown_timeout_s=1,
    # Rare: the tests see what the replica itself does when stopped, before the controller's
    # health check would take it out of the routers' view.
    health_check_period_s=60,
)
class Steady:
    """Answers each call after a short wait: under steady load a replica is never idle."""

    async def work(self, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return swell.get_replica_context().replica_id


steady_app = Steady.bind()


class _CyclicModel:
    def __init__(self) -> None:
        self.me = self


@swell.deployment(num_replicas=2, graceful_shutdown_timeout_s=60, max_ongoing_requests=50)
class Versioned:
    """Answers with its version; can stream slowly, and can refuse to start (broken update)."""

    def __init__(self, version: str, broken: bool = False) -> None:
        if broken:
            raise RuntimeError(f"version {version} cannot load its model")
        self.version = version
        self.config: Any = None
        # A "model" in a reference cycle; those built at startup are frozen with the rest.
        self.model = _CyclicModel()
        self.replaced = weakref.ref(self.model)

    def reconfigure(self, config: Any) -> None:
        self.config = config
        self.replaced = weakref.ref(self.model)
        self.model = _CyclicModel()  # the last one is garbage now, held only by its cycle

    async def __call__(self, request: Request) -> Any:
        if request.url.path == "/stream":
            seconds = float(request.query_params["seconds"])

            async def ticks() -> AsyncIterator[bytes]:
                deadline = time.monotonic() + seconds
                while time.monotonic() < deadline:
                    yield f"{self.version}\n".encode()
                    await asyncio.sleep(0.5)
                yield b"end\n"

            return StreamingResponse(ticks(), media_type="text/plain")
        return {
            "version": self.version,
            "config": self.config,
            "replica": swell.get_replica_context().replica_id,
            "replaced_model_freed": self.replaced() is None,
        }


_FAST_AUTOSCALING = {
    "target_ongoing_requests": 1,
    "upscale_delay_s": 0,
    "downscale_delay_s": 2,
    "metrics_interval_s": 0.25,
    "look_back_period_s": 1,
}


@swell.deployment(
    max_ongoing_requests=10,
    autoscaling_config={"min_replicas": 1, "max_replicas": 3, **_FAST_AUTOSCALING},
)
class Elastic:
    """Holds each request until its gate file appears: load the test controls exactly."""

    async def __call__(self, request: Request) -> dict[str, str]:
        gate = request.query_params.get("gate")
        deadline = time.monotonic() + 30
        while gate and not Path(gate).exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return {"replica": swell.get_replica_context().replica_id}


elastic_app = Elastic.bind()
cold_app = Elastic.options(
    autoscaling_config={"min_replicas": 0, "max_replicas": 2, **_FAST_AUTOSCALING}
).bind()
cold_model_app = Composer.bind(
    Model.options(
        num_replicas="auto",
        autoscaling_config={"min_replicas": 0, "max_replicas": 1, **_FAST_AUTOSCALING},
    ).bind()
)


@swell.deployment(num_replicas=2, max_ongoing_requests=10)
class Fragile:
    """Notes each attempt in the request's marker file, then dies: always on a POST, on a GET
    only at the first attempt (so a GET sent again is answered by the other replica)."""

    async def __call__(self, request: Request) -> dict[str, int]:
        await request.body()  # all of it read: the replica's death closes cleanly, no reset
        marker = Path(request.query_params["marker"])
        with marker.open("a") as attempts_file:
            attempts_file.write(f"{os.getpid()}\n")
        attempts = len(marker.read_text().splitlines())
        if request.method == "POST" or attempts == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return {"attempts": attempts}


fragile_app = Fragile.bind()


@swell.deployment
class Peer:
    def __call__(self) -> str:
        return "peer"


@swell.deployment
class WhereSyncRuns:
    """Where plain def methods run: the replica's main thread (its loop) or a worker thread."""

    def __init__(self, peer: DeploymentHandle) -> None:
        self.peer = peer

    def __call__(self, request: Request) -> dict[str, Any]:
        answer: dict[str, Any] = {"on_loop": threading.current_thread() is threading.main_thread()}
        try:
            answer["peer"] = self.peer.remote().result(timeout_s=10)
        except RuntimeError as error:
            answer["peer"] = f"RuntimeError: {error}"
        return answer

    def tokens(self, n: int) -> Iterator[str]:
        on_loop = threading.current_thread() is threading.main_thread()
        for i in range(n):
            yield f"{i}:{on_loop}"


def sync_placement_app(threadpool: str | None) -> swell.Application:
    """WhereSyncRuns with RAY_SERVE_RUN_SYNC_IN_THREADPOOL set to ``threadpool`` (None: unset)."""
    env = {} if threadpool is None else {"RAY_SERVE_RUN_SYNC_IN_THREADPOOL": threadpool}
    options = {"runtime_env": {"env_vars": env}}
    return cast(Deployment, WhereSyncRuns).options(ray_actor_options=options).bind(Peer.bind())
