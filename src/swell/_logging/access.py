"""Access lines, as Ray Serve writes them: ``GET /path 200 3.2ms`` for HTTP requests and
``CALL method OK 1.1ms`` for handle calls, each on a line that carries the request id.

``logging_config.enable_access_log: false`` turns them off; ``log_level`` above INFO too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

logger = logging.getLogger("swell.access")


class AccessLog:
    """Writes one line per HTTP request or handle call, when enabled.

    ``write``, when given, takes the message and writes the whole line itself, without a
    LogRecord (see ``replica.py``); else the line goes through the ``swell.access`` logger.
    """

    __slots__ = ("_write", "enabled")

    def __init__(self, enabled: bool, write: Callable[[str], None] | None = None) -> None:
        self.enabled = enabled and logger.isEnabledFor(logging.INFO)
        self._write = write or logger.info

    def http(self, method: str, path: str, status: int | str, started: float) -> None:
        if self.enabled:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._write(f"{method} {path} {status} {elapsed_ms:.1f}ms")

    def call(self, method: str, outcome: str, started: float) -> None:
        if self.enabled:
            elapsed_ms = (time.perf_counter() - started) * 1000
            self._write(f"CALL {method} {outcome} {elapsed_ms:.1f}ms")


class _Dispatcher(Protocol):
    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any: ...

    def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]: ...


def _outcome(error: BaseException | None) -> str:
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, asyncio.CancelledError) else "ERROR"


class LoggedDispatcher:
    """The user's methods behind the data plane, with an access line for each handle call."""

    def __init__(self, dispatcher: _Dispatcher, access: AccessLog) -> None:
        self._dispatcher = dispatcher
        self._access = access

    async def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self._access.enabled:
            return await self._dispatcher.call(method, args, kwargs)
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            return await self._dispatcher.call(method, args, kwargs)
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._access.call(method, _outcome(error), started)

    def stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        if not self._access.enabled:
            return self._dispatcher.stream(method, args, kwargs)  # no layer per item
        return self._logged_stream(method, args, kwargs)

    async def _logged_stream(
        self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> AsyncIterator[Any]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            async for item in self._dispatcher.stream(method, args, kwargs):
                yield item
        except BaseException as raised:
            error = raised
            raise
        finally:
            self._access.call(method, _outcome(error), started)
