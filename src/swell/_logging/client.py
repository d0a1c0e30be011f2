"""``swell logs``: print an instance's log records in time order, and follow them.

The records come from the admin API (``GET /api/swell/logs``), so the command works wherever
the admin API is reachable; each answer carries a cursor that the next request passes on.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from types import FrameType
from typing import Any
from urllib.parse import urlencode

from swell._admin_client import admin_request
from swell._protocol import LOGS_PATH

FOLLOW_POLL_S = 0.5


def _fetch(
    address: str,
    token: str | None,
    app_name: str | None,
    deployment: str | None,
    cursor: dict[str, int] | None,
) -> dict[str, Any]:
    query: dict[str, str] = {}
    if app_name is not None:
        query["app"] = app_name
    if deployment is not None:
        query["deployment"] = deployment
    if cursor is not None:
        query["cursor"] = json.dumps(cursor, separators=(",", ":"))
    path = LOGS_PATH + (f"?{urlencode(query)}" if query else "")
    return admin_request(address, "GET", path, token)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def print_logs(
    address: str,
    token: str | None,
    app_name: str | None,
    deployment: str | None,
    follow: bool,
) -> int:
    """Print the recent records; with ``follow``, then new ones until Ctrl-C or SIGTERM."""
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm) if follow else None
    cursor: dict[str, int] | None = None
    try:
        while True:
            answer = _fetch(address, token, app_name, deployment, cursor)
            for record in answer["records"]:
                sys.stdout.write(record + "\n")
            sys.stdout.flush()
            # An empty cursor (no files yet) would mean "recent records" again: keep a marker.
            cursor = answer["cursor"] or {"": 0}
            if not follow:
                return 0
            time.sleep(FOLLOW_POLL_S)
    except KeyboardInterrupt:
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
