"""The user's class or function inside a replica: construction, calls, hooks."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request


async def call_maybe_sync(
    executor: concurrent.futures.Executor | None,
    fn: Callable[..., Any],
    /,
    *args: Any,
    **kwargs: Any,
) -> Any:
    """Await a coroutine function; run a plain one in a thread so the loop never blocks
    (in a copy of this task's context, so the request context reaches it), or, with no
    ``executor`` (RAY_SERVE_RUN_SYNC_IN_THREADPOOL=0), right here on the loop."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    if executor is None:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result
    # Executor threads do not inherit the caller's context: the request context (request
    # id, model id) goes along in a copy.
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    result = await asyncio.get_running_loop().run_in_executor(executor, call)
    if inspect.isawaitable(result):
        return await result
    return result


async def _raising(error: Exception) -> AsyncIterator[Any]:
    """A stream whose first step raises ``error``."""
    raise error
    yield  # an async generator, never reached


def _seeing_loop(loop: asyncio.AbstractEventLoop, cls: Callable[..., Any]) -> Callable[..., Any]:
    """``cls`` for a worker thread in which ``asyncio.get_running_loop()`` is the replica's loop.

    Ray runs constructors on the replica's event loop, so Ray code may call
    ``asyncio.get_running_loop()`` (or ``create_task``) in a sync ``__init__``. A task made
    there starts once the constructor returns (its completion wakes the loop).
    """
    if inspect.iscoroutinefunction(cls):
        return cls

    def construct(*args: Any, **kwargs: Any) -> Any:
        asyncio.events._set_running_loop(loop)
        try:
            return cls(*args, **kwargs)
        finally:
            asyncio.events._set_running_loop(None)

    return construct


def takes_arguments(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` (a function or bound method) accepts one positional argument."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return True  # a builtin or C callable: assume it takes the request
    try:
        signature.bind(None)
    except TypeError:
        return False
    return True


class UserCallable:
    """Owns the user's instance (or function) and the optional lifecycle hooks.

    Sync user code runs on two thread pools: requests, generators and the constructor on one
    sized for ``max_ongoing_requests``, and ``check_health``/``reconfigure``/``__del__`` on a
    thread of their own, so a health check never queues behind busy request threads (which
    would get a loaded replica replaced as unhealthy).
    """

    def __init__(
        self,
        func_or_class: Callable[..., Any],
        is_class: bool,
        max_ongoing: int = 5,
        sync_in_threads: bool = True,
    ) -> None:
        self._func_or_class = func_or_class
        self._is_class = is_class
        self.instance: Any = None
        self._entry: Callable[..., Any] | None = None
        self._entry_is_async = False
        self._entry_takes_request = True
        self._work = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(4, max_ongoing), thread_name_prefix="swell-user"
        )
        # RAY_SERVE_RUN_SYNC_IN_THREADPOOL=0: plain def methods (requests, handle calls,
        # generators) run on the loop; the constructor and the hooks stay in threads.
        self._requests: concurrent.futures.Executor | None = self._work if sync_in_threads else None
        self._hooks = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="swell-hooks"
        )
        # Handle-call methods by name, with whether each is a coroutine function: looked up
        # and inspected once, not on every call.
        self._methods: dict[str, tuple[Callable[..., Any], bool]] = {}

    async def construct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._is_class:
            # Constructors often load models: keep them off the loop, but let them see it.
            self.instance = await call_maybe_sync(
                self._work,
                _seeing_loop(asyncio.get_running_loop(), self._func_or_class),
                *args,
                **kwargs,
            )
            self._entry = getattr(self.instance, "__call__", None)  # noqa: B004
        else:
            self.instance = None
            self._entry = self._func_or_class
        # Decided once: inspecting the entry on every request is measurable at 10k req/s.
        self._entry_is_async = self._entry is not None and inspect.iscoroutinefunction(self._entry)
        self._entry_takes_request = self._entry is None or takes_arguments(self._entry)

    async def reconfigure(self, user_config: Any) -> None:
        hook = getattr(self.instance, "reconfigure", None)
        if hook is None:
            raise TypeError(
                f"user_config is set but {type(self.instance).__name__} has no "
                "reconfigure(self, user_config) method; add one or drop user_config."
            )
        await call_maybe_sync(self._hooks, hook, user_config)
        self._methods.clear()  # reconfigure may have rebound a method: look it up again

    async def check_health(self) -> None:
        hook = getattr(self.instance, "check_health", None)
        if hook is not None:
            await call_maybe_sync(self._hooks, hook)

    async def shutdown(self) -> None:
        """Run the user's ``__del__`` (sync or async) once, as the replica stops, as Ray does."""
        hook = getattr(type(self.instance), "__del__", None) if self._is_class else None
        if hook is not None:
            await call_maybe_sync(self._hooks, hook, self.instance)
        self._work.shutdown(wait=False, cancel_futures=True)
        self._hooks.shutdown(wait=False, cancel_futures=True)

    @property
    def has_http_entry(self) -> bool:
        return self._entry is not None

    def _method(self, name: str) -> Callable[..., Any]:
        if not self._is_class:
            if name != "__call__":
                raise AttributeError(
                    f"function deployment {self._func_or_class.__name__} has only __call__, "
                    f"not {name!r}"
                )
            return self._func_or_class
        if name.startswith("_") and name != "__call__":
            raise AttributeError(f"private method {name!r} cannot be called through a handle")
        method: Callable[..., Any] | None = getattr(self.instance, name, None)
        if method is None or not callable(method):
            raise AttributeError(
                f"{type(self.instance).__name__} has no method {name!r} to call through a handle"
            )
        return method

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A handle call: the method's result (a generator here needs stream=True)."""
        found = self._methods.get(method)
        if found is None:
            fn = self._method(method)
            found = self._methods[method] = (fn, inspect.iscoroutinefunction(fn))
        fn, is_async = found
        if is_async:
            result = await fn(*args, **kwargs)
        else:
            result = await call_maybe_sync(self._requests, fn, *args, **kwargs)
        if inspect.isasyncgen(result) or inspect.isgenerator(result):
            raise TypeError(
                f"method {method!r} returned a generator; call it with "
                "handle.options(stream=True) to iterate its results"
            )
        return result

    def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        """A streaming handle call: each item the method's (async) generator yields.

        An async generator method's own generator is returned, with no layer around it to
        step through for every item. Errors (no such method, wrong arguments) are raised
        by the first step, as from any other method.
        """
        try:
            fn = self._method(method)
            if inspect.isasyncgenfunction(fn):
                generator: AsyncIterator[Any] = fn(*args, **kwargs)
                return generator
        except Exception as error:
            return _raising(error)
        return self._stream(method, fn, args, kwargs)

    async def _stream(
        self,
        method: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> AsyncIterator[Any]:
        result = fn(*args, **kwargs)
        if inspect.iscoroutine(result):
            result = await result
        if inspect.isasyncgen(result):
            async for item in result:
                yield item
        elif inspect.isgenerator(result) and self._requests is None:
            for item in result:
                yield item
        elif inspect.isgenerator(result):
            loop = asyncio.get_running_loop()
            done = object()
            step = functools.partial(contextvars.copy_context().run, next, result, done)
            while True:
                item = await loop.run_in_executor(self._work, step)
                if item is done:
                    break
                yield item
        else:
            raise TypeError(
                f"method {method!r} was called with stream=True but did not return a generator"
            )

    async def call_http(self, request: Request) -> Any:
        if self._entry is None:
            raise RuntimeError(
                f"{type(self.instance).__name__} defines no __call__(self, request), so it "
                "cannot answer HTTP requests; define one or use @swell.ingress(app)."
            )
        # As Ray does, a handler with no parameters is called without the request.
        args = (request,) if self._entry_takes_request else ()
        if self._entry_is_async:
            return await self._entry(*args)
        return await call_maybe_sync(self._requests, self._entry, *args)
