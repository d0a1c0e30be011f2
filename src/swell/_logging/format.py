"""One log record as one line: TEXT (a readable prefix) or JSON (Ray Serve's field names).

TEXT::

    2026-12-01 13:58:31.123 INFO [default/Model Model-1a2b3c4d 9f0e...] message

JSON: ``asctime``, ``levelname``, ``message``, ``filename``, ``lineno``, ``timestamp_ns``,
``application``, ``deployment``, ``replica``, ``request_id``, ``route``, ``component_name``,
``component_id`` (and ``exc_text`` when an exception is attached), plus any
``additional_log_standard_attrs``. Times are UTC, so lines from every process merge by time.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

from swell.context import _get_serve_request_context

Encoding = Literal["TEXT", "JSON"]


@dataclass(frozen=True)
class Component:
    """Which process writes: a replica (with its app and deployment) or the controller."""

    component_name: str  # "replica" or "controller"
    component_id: str  # the replica id, or the controller's pid
    application: str = ""
    deployment: str = ""

    @property
    def label(self) -> str:
        if self.component_name == "replica":
            return f"{self.application}/{self.deployment} {self.component_id}"
        return f"{self.component_name} {self.component_id}"


_second_cache: tuple[int, str] = (-1, "")


def utc_time(seconds: float) -> str:
    """``2026-12-01 13:58:31.123`` (UTC): the time every swell log line starts with."""
    global _second_cache
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    cached_second, text = _second_cache
    if whole != cached_second:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
        _second_cache = (whole, text)
    return f"{text}.{millis:03d}"


class SwellFormatter(logging.Formatter):
    """Formats records for one component; the request comes from the request context."""

    def __init__(
        self, component: Component, encoding: Encoding = "TEXT", extra_attrs: tuple[str, ...] = ()
    ) -> None:
        super().__init__()
        self._component = component
        self._json = encoding == "JSON"
        self.extra_attrs = extra_attrs
        self._label = component.label

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        request = _get_serve_request_context()
        request_id = getattr(record, "request_id", None) or request.request_id
        exc_text = ""
        if record.exc_info:
            exc_text = self.formatException(record.exc_info)
        elif record.exc_text:
            exc_text = record.exc_text
        extra = {name: getattr(record, name, None) for name in self.extra_attrs}
        if self._json:
            return self._json_line(
                record.created,
                record.levelname,
                message,
                (record.filename, record.lineno),
                request_id,
                request.route,
                exc_text,
                extra,
            )
        line = f"{utc_time(record.created)} {record.levelname} [{self._label} {request_id or '-'}] "
        line += message
        for name, value in extra.items():
            line += f" {name}={'' if value is None else value}"
        if exc_text:
            line += "\n" + exc_text
        return line

    def format_info(self, message: str, where: tuple[str, int]) -> str:
        """An INFO line without a LogRecord (access lines: a record costs more than the
        request it describes). Only for formatters without ``extra_attrs``."""
        request = _get_serve_request_context()
        if self._json:
            created = time.time()
            return self._json_line(
                created, "INFO", message, where, request.request_id, request.route, "", {}
            )
        return f"{utc_time(time.time())} INFO [{self._label} {request.request_id or '-'}] {message}"

    def _json_line(
        self,
        created: float,
        levelname: str,
        message: str,
        where: tuple[str, int],
        request_id: str,
        route: str,
        exc_text: str,
        extra: dict[str, Any],
    ) -> str:
        component = self._component
        document: dict[str, Any] = {
            "asctime": utc_time(created),
            "levelname": levelname,
            "message": message,
            "filename": where[0],
            "lineno": where[1],
            "timestamp_ns": round(created * 1e6) * 1000,  # microseconds: floats hold them
            "component_name": component.component_name,
            "component_id": component.component_id,
        }
        if component.component_name == "replica":
            document["application"] = component.application
            document["deployment"] = component.deployment
            document["replica"] = component.component_id
        if request_id:
            document["request_id"] = request_id
        if route:
            document["route"] = route
        if exc_text:
            document["exc_text"] = exc_text
        document.update(extra)
        return json.dumps(document, default=str)
