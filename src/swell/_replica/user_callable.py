"""The user's class or function inside a replica: construction, calls, hooks."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable
from typing import Any

from starlette.requests import Request


async def call_maybe_sync(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Await a coroutine function; run a plain one in a thread so the loop never blocks."""
    if inspect.iscoroutinefunction(fn):
        return await fn(*args, **kwargs)
    result = await asyncio.get_running_loop().run_in_executor(
        None, functools.partial(fn, *args, **kwargs)
    )
    if inspect.isawaitable(result):
        return await result
    return result


class UserCallable:
    """Owns the user's instance (or function) and the optional lifecycle hooks."""

    def __init__(self, func_or_class: Callable[..., Any], is_class: bool) -> None:
        self._func_or_class = func_or_class
        self._is_class = is_class
        self.instance: Any = None
        self._entry: Callable[..., Any] | None = None

    async def construct(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._is_class:
            # Constructors often load models: keep them off the loop.
            self.instance = await call_maybe_sync(self._func_or_class, *args, **kwargs)
            self._entry = getattr(self.instance, "__call__", None)  # noqa: B004
        else:
            self.instance = None
            self._entry = self._func_or_class

    async def reconfigure(self, user_config: Any) -> None:
        hook = getattr(self.instance, "reconfigure", None)
        if hook is None:
            raise TypeError(
                f"user_config is set but {type(self.instance).__name__} has no "
                "reconfigure(self, user_config) method; add one or drop user_config."
            )
        await call_maybe_sync(hook, user_config)

    async def check_health(self) -> None:
        hook = getattr(self.instance, "check_health", None)
        if hook is not None:
            await call_maybe_sync(hook)

    @property
    def has_http_entry(self) -> bool:
        return self._entry is not None

    async def call_http(self, request: Request) -> Any:
        if self._entry is None:
            raise RuntimeError(
                f"{type(self.instance).__name__} defines no __call__(self, request), so it "
                "cannot answer HTTP requests; define one or use @swell.ingress(app)."
            )
        return await call_maybe_sync(self._entry, request)
