"""The LLM application: one ``LLMServer`` deployment per model behind one OpenAI ingress.

Structured as Ray Serve LLM's::

    client ─HTTP─▶ HAProxy ─▶ LLMRouter (OpenAI API) ─handle stream─▶ LLMServer_<model> (engine)

:func:`build_openai_app` is the application builder a config file names
(``import_path: swell.llm:build_openai_app``). Each model's ``LLMServer`` replicas hold its
engine and stream :class:`~swell.llm.engines.base.GenerationChunk` objects from
``LLMServer.generate``; the ingress serves :func:`~swell.llm.openai_app.build_openai_router`
over :class:`HandleBackend` objects, so the API code is the same as over in-process engines.

Errors raised in an LLMServer replica reach the ingress as :class:`swell.RemoteError` whose
``cause`` is the original error, which the API answers with its status (400, 404, 503, ...).
A client that goes away cancels the ingress's request task; that closes the handle stream,
which cancels ``LLMServer.generate`` in its replica, which closes the engine's generator: the
engine stops generating within a token.

Nothing here imports FastAPI or an engine: the ingress imports the API when it starts, and
each LLMServer imports its engine.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import re
import threading
from collections.abc import AsyncGenerator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from swell.config import DeploymentConfig, validate_deployment_options
from swell.deployment import Application, Deployment
from swell.exceptions import ConfigError
from swell.handle import DeploymentHandle, DeploymentResponseGenerator
from swell.llm.config import LLMConfig, LLMServingArgs, validate_llm_config, validate_serving_args
from swell.llm.engines import create_engine
from swell.llm.engines.base import GenerationChunk, GenerationRequest, LLMEngine, RequestDone

T = TypeVar("T")

INGRESS_NAME = "LLMRouter"
SERVER_NAME_PREFIX = "LLMServer_"
# The ingress only parses JSON and relays chunks: let HAProxy send it everything, and let
# the handles queue for the LLMServers (max_queued_requests there is what turns into 503s).
DEFAULT_INGRESS_OPTIONS: dict[str, Any] = {"max_ongoing_requests": 1024}
# vLLM batches continuously, so one replica takes many requests at once. llama.cpp runs one
# sequence at a time; swell's default (5) keeps the next requests queued in the engine.
DEFAULT_SERVER_OPTIONS: dict[str, dict[str, Any]] = {
    "llama_cpp": {},
    "vllm": {"max_ongoing_requests": 256},
}
# How many ended requests each LLMServer remembers for stats() (newest last).
RECENT_REQUESTS = 64

_INVALID_NAME_CHARACTERS = re.compile(r"[^A-Za-z0-9_.\-]")


# -- the model's replicas ------------------------------------------------------------------------


@dataclasses.dataclass
class _Counters:
    requests: int = 0
    active: int = 0
    finished: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(("stop", "length", "cancelled", "error"), 0)
    )
    engine: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(("stop", "length", "cancelled", "error"), 0)
    )
    completion_tokens: int = 0
    recent: collections.deque[RequestDone] = dataclasses.field(
        default_factory=lambda: collections.deque(maxlen=RECENT_REQUESTS)
    )


class LLMServer:
    """One model's engine, in every replica of the model's deployment.

    The constructor loads the model (swell runs constructors off the event loop), so a replica
    is ready only once its engine is. ``generate`` is called through a streaming handle.
    ``stats()`` (also the answer to an HTTP GET on the replica's own address) counts this
    replica's requests and how each ended in the engine.
    """

    def __init__(self, llm_config: LLMConfig | dict[str, Any]) -> None:
        self._config = validate_llm_config(llm_config)
        self._lock = threading.Lock()  # on_request_done may come from an engine thread
        self._counters = _Counters()
        self._engine: LLMEngine = create_engine(self._config, on_request_done=self._on_request_done)
        _run_to_completion(self._engine.start())

    @property
    def model_id(self) -> str:
        return self._config.model_id

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        """The engine's chunks for ``request``; closing this stops the engine's generation."""
        counters = self._counters
        counters.requests += 1
        counters.active += 1
        outcome = "cancelled"
        stream = self._engine.generate(request)
        try:
            async for chunk in stream:
                if chunk.finish_reason is not None:
                    outcome = chunk.finish_reason
                yield chunk
        except Exception:
            outcome = "error"
            raise
        finally:
            counters.active -= 1
            counters.finished[outcome] += 1
            await stream.aclose()

    def _on_request_done(self, done: RequestDone) -> None:
        with self._lock:
            self._counters.engine[done.reason] += 1
            self._counters.completion_tokens += done.completion_tokens
            self._counters.recent.append(done)

    def stats(self) -> dict[str, Any]:
        """This replica's counters: requests taken, active, how they ended; engine outcomes."""
        from swell.api import get_replica_context

        try:
            replica_id: str | None = get_replica_context().replica_id
        except RuntimeError:
            replica_id = None
        with self._lock:
            counters = self._counters
            return {
                "model_id": self.model_id,
                "replica_id": replica_id,
                "requests": counters.requests,
                "active": counters.active,
                "finished": dict(counters.finished),
                "engine": dict(counters.engine),
                "completion_tokens": counters.completion_tokens,
                "recent": [dataclasses.asdict(done) for done in counters.recent],
            }

    async def __call__(self, request: Request) -> dict[str, Any]:
        """GET on the replica's own address (never routed by HAProxy): ``stats()``."""
        return self.stats()

    async def check_health(self) -> None:
        """Healthy while the engine is: a stopped engine fails the check."""
        self._engine.context_length  # noqa: B018 - raises once the engine is not running

    def __repr__(self) -> str:
        return f"LLMServer(model_id={self.model_id!r}, engine={self._config.engine_name!r})"


def _run_to_completion(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on a loop of its own: the constructor has none (swell runs it in a thread).

    Engines start this way and serve from the replica's loop afterwards: llama.cpp loads on
    its own worker thread; vLLM binds its engine to the loop of its first request.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # Constructed on a running loop (not by swell): load on another thread, blocking it.
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="swell-llm-start") as pool:
        return pool.submit(asyncio.run, coro).result()


# -- the ingress ---------------------------------------------------------------------------------


class HandleBackend:
    """An :class:`~swell.llm.engines.base.LLMBackend` whose engine is in another deployment:
    ``generate`` streams ``LLMServer.generate`` through a deployment handle."""

    def __init__(self, handle: DeploymentHandle) -> None:
        self._handle = handle.options(method_name="generate", stream=True)

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        response: DeploymentResponseGenerator = self._handle.remote(request)
        ended = False
        try:
            async for chunk in response:
                yield chunk
            ended = True
        finally:
            if not ended:
                # Closed early (the client went away) or failed: stop the LLMServer's
                # generator, and with it the engine. A no-op once the stream has ended.
                response.cancel()

    def __repr__(self) -> str:
        return f"HandleBackend({self._handle.deployment_name!r})"


class _ASGIResponse(Response):
    """Hands the whole request to an ASGI app: what ``LLMRouter.__call__`` answers with."""

    def __init__(self, app: ASGIApp) -> None:
        super().__init__()
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


class LLMRouter:
    """The OpenAI API (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``): each
    request goes to the LLMServer of the ``model`` it names, through that model's handle."""

    def __init__(self, model_ids: Sequence[str], *servers: DeploymentHandle) -> None:
        from swell.llm.openai_app import build_openai_router

        if len(model_ids) != len(servers):
            raise ValueError(
                f"LLMRouter got {len(model_ids)} model ids and {len(servers)} LLMServer "
                f"deployments; give one deployment per model id"
            )
        self._backends = {
            model_id: HandleBackend(server)
            for model_id, server in zip(model_ids, servers, strict=True)
        }
        self._app = _ASGIResponse(build_openai_router(self._backends))

    async def __call__(self, request: Request) -> Response:
        return self._app

    def __repr__(self) -> str:
        return f"LLMRouter(models={list(self._backends)})"


# -- building the application --------------------------------------------------------------------


def server_deployment_name(model_id: str) -> str:
    """``LLMServer_<model_id>``, with characters deployment names do not allow made ``_``."""
    return SERVER_NAME_PREFIX + _INVALID_NAME_CHARACTERS.sub("_", model_id)


def build_llm_deployment(
    llm_config: LLMConfig | dict[str, Any], *, where: str = "llm_config"
) -> Application:
    """The LLMServer deployment of one model, with its ``deployment_config`` applied, bound."""
    config = validate_llm_config(llm_config, where)
    if config.runtime_env:
        raise ConfigError(
            f"Invalid {where}: runtime_env={config.runtime_env!r} is not applied per model by "
            f"swell; set the application's runtime_env (env_vars, working_dir) in the config "
            f"file instead, and remove it from the LLMConfig"
        )
    options: dict[str, Any] = {
        "name": server_deployment_name(config.model_id),
        **DEFAULT_SERVER_OPTIONS[config.engine_name],
        **config.deployment_config,
    }
    if config.accelerator_type is not None:
        actor_options = dict(options.get("ray_actor_options") or {})
        actor_options.setdefault("accelerator_type", config.accelerator_type)
        options["ray_actor_options"] = actor_options
    deployment_config = validate_deployment_options(
        options, f"{where}.deployment_config (model {config.model_id!r})"
    )
    return Deployment(LLMServer, deployment_config).bind(config)


def build_openai_app(
    args: LLMServingArgs | Mapping[str, Any] | None = None, /, **fields: Any
) -> Application:
    """The OpenAI-compatible application serving every model of ``args.llm_configs``.

    ``args`` is a config file's ``args`` (``{"llm_configs": [...], "ingress_deployment_config":
    {...}}``) or an :class:`LLMServingArgs`; the same fields may be given as keywords:
    ``build_openai_app(llm_configs=[LLMConfig(...)])``. Each model gets its own LLMServer
    deployment (``LLMServer_<model_id>``); one ``LLMRouter`` deployment is the ingress.
    """
    if isinstance(args, LLMServingArgs):
        args = args.model_dump(exclude_unset=True)
    elif args is not None and not isinstance(args, Mapping):
        raise ConfigError(
            f"build_openai_app takes a mapping of args (llm_configs, "
            f"ingress_deployment_config), not {type(args).__name__} {args!r}"
        )
    merged = {**(args or {}), **fields}
    serving = validate_serving_args(merged)

    servers: list[Application] = []
    seen_ids: dict[str, int] = {}
    seen_names: dict[str, int] = {}
    for index, config in enumerate(serving.llm_configs):
        where = f"llm_configs[{index}]"
        if config.model_id in seen_ids:
            raise ConfigError(
                f"Invalid {where}: model_id {config.model_id!r} is already served by "
                f"llm_configs[{seen_ids[config.model_id]}]; give each model its own model_id"
            )
        seen_ids[config.model_id] = index
        server = build_llm_deployment(config, where=where)
        name = server.ingress_name
        if name in seen_names:
            raise ConfigError(
                f"Invalid {where}: its deployment would be named {name!r}, like that of "
                f"llm_configs[{seen_names[name]}]; set deployment_config.name to tell them apart"
            )
        seen_names[name] = index
        servers.append(server)

    ingress_config = _ingress_config(serving.ingress_deployment_config)
    if ingress_config.name in seen_names:
        raise ConfigError(
            f"Invalid ingress_deployment_config: name {ingress_config.name!r} is taken by "
            f"llm_configs[{seen_names[ingress_config.name]}]'s deployment; choose another"
        )
    model_ids = [config.model_id for config in serving.llm_configs]
    return Deployment(LLMRouter, ingress_config).bind(model_ids, *servers)


def _ingress_config(options: dict[str, Any]) -> DeploymentConfig:
    return validate_deployment_options(
        {"name": INGRESS_NAME, **DEFAULT_INGRESS_OPTIONS, **options}, "ingress_deployment_config"
    )
