"""SIGINT and SIGTERM for the foreground commands: they set an event instead of raising.

Installed before anything starts, so a Ctrl-C that arrives at any moment (while the app
imports, while replicas start, right after "serving" is printed) is never lost: whatever is
waiting sees the event and shuts swell down in order.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

stop_requested = threading.Event()
_previous: dict[int, Any] = {}


def _on_signal(signum: int, frame: FrameType | None) -> None:
    stop_requested.set()


def install() -> None:
    """Route SIGINT/SIGTERM to ``stop_requested`` (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signum not in _previous:
            _previous[signum] = signal.signal(signum, _on_signal)


def restore() -> None:
    while _previous:
        signum, handler = _previous.popitem()
        signal.signal(signum, handler)


def installed() -> bool:
    return bool(_previous)
