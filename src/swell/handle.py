"""Deployment handles: call another deployment's methods, straight to one of its replicas.

A call goes from the caller's process to the chosen replica over swell's framed protocol on
TCP (``_dataplane/``), with no proxy in between. Inside async code a call runs on the caller's
own event loop; from sync code (a driver script, or a sync method running in a thread) it runs
on a background loop owned by swell.

Every call has a deadline, ``handle.options(timeout_s=...)`` (``DEFAULT_TIMEOUT_S`` unless
set): for a unary call it bounds the whole call, for a streaming call each wait for the next
item. Past it the caller gets RequestTimeoutError and the callee's task is cancelled.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import time
import weakref
from asyncio.events import _get_running_loop
from collections.abc import AsyncIterator, Awaitable, Coroutine, Generator, Iterator
from typing import Any

from swell import _local_testing
from swell._dataplane.router import ClusterContext, Router
from swell._metrics.process import PROCESS
from swell.exceptions import ConfigError, RequestTimeoutError

# Seconds a handle call may take (a streaming call: each wait for its next item) unless the
# handle says otherwise: long enough for a slow model, short enough that a stuck callee does
# not hold its caller forever.
DEFAULT_TIMEOUT_S = 300.0

_cluster: ClusterContext | None = None
_routers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str], Router]] = (
    weakref.WeakKeyDictionary()
)
_background: asyncio.AbstractEventLoop | None = None
_background_lock = threading.Lock()


def set_cluster_context(context: ClusterContext | None) -> None:
    """Set by the replica at start and by the driver when swell starts in-process."""
    global _cluster
    _cluster = context


def cluster_context() -> ClusterContext | None:
    """The cluster this process belongs to, if it has joined one."""
    return _cluster


def _queued_calls() -> dict[tuple[str, str], int]:
    """Calls from this process waiting for a replica with room, per (app, deployment)."""
    counts: dict[tuple[str, str], int] = {}
    for routers in list(_routers.values()):
        for key, router in list(routers.items()):
            counts[key] = counts.get(key, 0) + router.waiting
    return counts


PROCESS.queued = _queued_calls


def close_routers() -> None:
    """Stop every router's watch and channels; called when swell shuts down in this process."""
    for loop, routers in list(_routers.items()):
        if loop.is_closed() or not routers:
            continue
        closing = list(routers.values())
        routers.clear()
        for router in closing:
            if loop.is_running() and loop is not _current_loop():
                asyncio.run_coroutine_threadsafe(router.close(), loop)


def _require_cluster() -> ClusterContext:
    if _cluster is None:
        raise RuntimeError(
            "DeploymentHandle calls need a running swell: call swell.run() (or swell.start()) "
            "first, or make the call from inside a deployment."
        )
    return _cluster


def _background_loop() -> asyncio.AbstractEventLoop:
    """A loop on a daemon thread, for handle calls made from synchronous code."""
    global _background
    with _background_lock:
        if _background is None or _background.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=loop.run_forever, name="swell-handle-loop", daemon=True
            )
            thread.start()
            _background = loop
        return _background


def _router(app_name: str, deployment: str) -> Router | _local_testing.LocalRouter:
    local = _local_testing.router_for(app_name, deployment)
    if local is not None:
        return local
    loop = asyncio.get_running_loop()
    routers = _routers.setdefault(loop, {})
    router = routers.get((app_name, deployment))
    if router is None:
        router = Router(app_name, deployment, _require_cluster())
        routers[(app_name, deployment)] = router
    return router


def _current_loop() -> asyncio.AbstractEventLoop | None:
    # asyncio's own "running loop or None", without raising and catching on every call.
    return _get_running_loop()


_CONTAINERS = (list, tuple, dict)
# Argument types that cannot hold a DeploymentResponse: skipped without a closer look.
_PLAIN = frozenset({str, int, float, bool, bytes, type(None)})


def _has_responses(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether any argument is, or holds, a DeploymentResponse (most calls: none)."""
    for value in args:
        if type(value) not in _PLAIN and _has_response(value):
            return True
    if not kwargs:
        return False
    return any(type(v) not in _PLAIN and _has_response(v) for v in kwargs.values())


def _has_response(value: Any) -> bool:
    """Whether a DeploymentResponse is in ``value`` or in its lists, tuples and dicts."""
    if isinstance(value, DeploymentResponse):
        return True
    if type(value) in _CONTAINERS:
        items = value.values() if type(value) is dict else value
        return any(_has_response(item) for item in items)
    return False


async def _resolve(value: Any) -> Any:
    """A DeploymentResponse passed as an argument is awaited first: calls chain. Those in
    lists, tuples and dicts (``[resp_a, resp_b]``) are awaited too."""
    if isinstance(value, DeploymentResponse):
        return await value
    if type(value) is dict:
        return {key: await _resolve(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        resolved = [await _resolve(item) for item in value]
        return resolved if type(value) is list else tuple(resolved)
    return value


async def _resolve_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if not _has_responses(args, kwargs):
        return args, kwargs
    return tuple([await _resolve(a) for a in args]), {
        k: await _resolve(v) for k, v in kwargs.items()
    }


class DeploymentResponse:
    """The pending result of ``handle.remote()``: ``await`` it, or ``.result()`` in sync code."""

    def __init__(
        self,
        task: asyncio.Task[Any] | None = None,
        future: concurrent.futures.Future[Any] | None = None,
    ) -> None:
        self._task = task
        self._future = future

    def __await__(self) -> Generator[Any, None, Any]:
        if self._task is not None and self._task.get_loop() is _current_loop():
            return (yield from self._task.__await__())
        if self._task is not None:
            raise RuntimeError("a DeploymentResponse can only be awaited on the loop that made it")
        assert self._future is not None
        return (yield from asyncio.wrap_future(self._future).__await__())

    def result(self, timeout_s: float | None = None) -> Any:
        """Block until the result is there (not from inside the loop that runs the call).

        ``timeout_s`` bounds only this wait: past it RequestTimeoutError (a TimeoutError) is
        raised and the call keeps running until the handle's own ``timeout_s``.
        """
        if self._future is None:
            raise RuntimeError(
                "result() would block the event loop this call runs on; use `await response`."
            )
        try:
            return self._future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            if self._future.done():
                raise  # the call's own TimeoutError (its timeout_s), not this wait's
            raise RequestTimeoutError(
                f"no result within result(timeout_s={timeout_s}); the call is still running "
                "(cancel() stops it)"
            ) from None

    def cancel(self) -> None:
        """Cancel the call; the callee's task gets CancelledError."""
        if self._task is not None:
            self._task.cancel()
        if self._future is not None:
            self._future.cancel()


class DeploymentResponseGenerator:
    """The items a streaming call yields: ``async for`` in async code, ``for`` in sync code."""

    def __init__(self, handle: DeploymentHandle, args: tuple[Any, ...], kwargs: dict[str, Any]):
        self._handle = handle
        self._args = args
        self._kwargs = kwargs
        self._loop = _current_loop()
        self._stream: AsyncIterator[Any] | None = None
        if self._loop is None:
            self._loop = _background_loop()
            self._in_loop = False
        else:
            self._in_loop = True

    async def _open(self) -> AsyncIterator[Any]:
        if self._stream is None:
            args, kwargs = await _resolve_arguments(self._args, self._kwargs)
            router = self._handle._router()
            self._stream = router.stream(
                self._handle.method_name,
                args,
                kwargs,
                self._handle.timeout_s,
                self._handle.multiplexed_model_id,
            )
        return self._stream

    async def _next(self) -> Any:
        stream = await self._open()
        return await stream.__anext__()

    def __aiter__(self) -> DeploymentResponseGenerator:
        return self

    def __anext__(self) -> Awaitable[Any]:
        stream = self._stream
        if stream is not None and self._in_loop:
            # The router's own step, not a coroutine around it: no layer per item.
            return stream.__anext__()
        return self._anext_slowly()

    async def _anext_slowly(self) -> Any:
        if self._in_loop:
            return await (await self._open()).__anext__()
        assert self._loop is not None
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._next(), self._loop))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        if self._in_loop:
            raise RuntimeError("iterate a streaming response with `async for` in async code")
        assert self._loop is not None
        try:
            return asyncio.run_coroutine_threadsafe(self._next(), self._loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self) -> None:
        """Stop the stream; the callee's generator gets CancelledError."""
        stream = self._stream
        if stream is None or self._loop is None:
            return
        closing: Coroutine[Any, Any, None] = stream.aclose()  # type: ignore[attr-defined]
        if self._in_loop:
            self._loop.create_task(closing)
        else:
            asyncio.run_coroutine_threadsafe(closing, self._loop)


def _check_timeout(timeout_s: Any) -> float:
    valid = isinstance(timeout_s, int | float) and not isinstance(timeout_s, bool)
    if not valid or not 0 < timeout_s < math.inf:
        raise ConfigError(
            f"timeout_s must be a positive, finite number of seconds, got {timeout_s!r}; "
            f"e.g. handle.options(timeout_s=30) (the default is {DEFAULT_TIMEOUT_S})."
        )
    return float(timeout_s)


class DeploymentHandle:
    """Calls one deployment of one application: ``handle.method.remote(*args)``.

    ``timeout_s`` (default ``DEFAULT_TIMEOUT_S``, 300 s) is each call's deadline: the whole
    call, or for ``stream=True`` each wait for the next item.
    """

    def __init__(
        self,
        deployment_name: str,
        app_name: str,
        *,
        method_name: str = "__call__",
        stream: bool = False,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        multiplexed_model_id: str = "",
    ) -> None:
        self.deployment_name = deployment_name
        self.app_name = app_name
        self.method_name = method_name
        self.stream = stream
        self.timeout_s = _check_timeout(timeout_s)
        if not isinstance(multiplexed_model_id, str):
            raise TypeError(
                f"multiplexed_model_id must be a string, got {type(multiplexed_model_id).__name__}"
            )
        self.multiplexed_model_id = multiplexed_model_id
        # The router of the last loop this handle called on: (loop, that loop's routers, router).
        self._last_router: (
            tuple[asyncio.AbstractEventLoop, dict[tuple[str, str], Router], Router] | None
        ) = None

    def options(
        self,
        *,
        method_name: str | None = None,
        stream: bool | None = None,
        timeout_s: float | None = None,
        multiplexed_model_id: str | None = None,
        _by_reference: bool | None = None,
        **unsupported: Any,
    ) -> DeploymentHandle:
        """A copy with some options changed. ``multiplexed_model_id``: the model the calls are
        for (they go to a replica that has it loaded). ``_by_reference`` is Ray's; swell accepts
        it and always calls replicas directly (there is no object store to pass references
        through).
        """
        if unsupported:
            raise TypeError(
                f"DeploymentHandle.options() got unsupported option(s) {sorted(unsupported)}; "
                "swell supports method_name, stream, timeout_s and multiplexed_model_id (and "
                "accepts _by_reference)."
            )
        return DeploymentHandle(
            self.deployment_name,
            self.app_name,
            method_name=self.method_name if method_name is None else method_name,
            stream=self.stream if stream is None else stream,
            timeout_s=self.timeout_s if timeout_s is None else timeout_s,
            multiplexed_model_id=(
                self.multiplexed_model_id if multiplexed_model_id is None else multiplexed_model_id
            ),
        )

    def __getattr__(self, name: str) -> DeploymentHandle:
        if name.startswith("_"):
            raise AttributeError(name)
        # Kept as an instance attribute: the next ``handle.name`` finds it without coming
        # here (a miss that reaches __getattr__ costs about 0.4 us on every call).
        handle = self.__dict__[name] = self.options(method_name=name)
        return handle

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Start the call now; returns a DeploymentResponse (or a generator with stream=True)."""
        if _local_testing.router_for(self.app_name, self.deployment_name) is None:
            _require_cluster()
        if self.stream:
            return DeploymentResponseGenerator(self, args, kwargs)
        coro = self._call(args, kwargs)
        loop = _current_loop()
        if loop is not None:
            return DeploymentResponse(task=loop.create_task(coro))
        return DeploymentResponse(future=asyncio.run_coroutine_threadsafe(coro, _background_loop()))

    async def _call(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            if _has_responses(args, kwargs):
                args, kwargs = await _resolve_arguments(args, kwargs)
            router = self._router()
            result = await router.call(
                self.method_name, args, kwargs, self.timeout_s, self.multiplexed_model_id
            )
            ok = True
            return result
        finally:
            PROCESS.call_done(
                self.app_name, self.deployment_name, ok, time.perf_counter() - started
            )

    def _router(self) -> Router | _local_testing.LocalRouter:
        """``_router()``, remembered per loop: the weak loop-to-routers map costs ~0.4 us."""
        last = self._last_router
        if last is not None and last[0] is _current_loop() and not _local_testing._apps:
            _, routers, known = last
            if routers.get((self.app_name, self.deployment_name)) is known:
                return known  # not closed (close_routers() empties the dict) nor replaced
        router = _router(self.app_name, self.deployment_name)
        if isinstance(router, Router):
            loop = asyncio.get_running_loop()
            self._last_router = (loop, _routers[loop], router)
        return router

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_handle,
            (
                self.deployment_name,
                self.app_name,
                self.method_name,
                self.stream,
                self.timeout_s,
                self.multiplexed_model_id,
            ),
        )

    def __repr__(self) -> str:
        return (
            f"DeploymentHandle(deployment={self.deployment_name!r}, app={self.app_name!r}, "
            f"method={self.method_name!r}, timeout_s={self.timeout_s})"
        )


def _rebuild_handle(
    deployment_name: str,
    app_name: str,
    method_name: str,
    stream: bool,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    multiplexed_model_id: str = "",
) -> DeploymentHandle:
    return DeploymentHandle(
        deployment_name,
        app_name,
        method_name=method_name,
        stream=stream,
        timeout_s=timeout_s,
        multiplexed_model_id=multiplexed_model_id,
    )
