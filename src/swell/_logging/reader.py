"""``swell logs``: the lines of an instance's log files, merged in time order.

A record is a line that starts with a time (swell's ``2026-12-01 13:58:31.123``, a JSON line's
``timestamp_ns``, HAProxy's ``<epoch>.<ms>``) and the lines after it that do not (a
traceback). A cursor (byte offsets per file) lets a follower read only what is new; only
complete lines are consumed.
"""

from __future__ import annotations

import calendar
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from swell._logging.files import (
    CONTROLLER_FILE,
    HAPROXY_FILE,
    REPLICA_PREFIX,
    SUFFIX,
    parse_replica_file_name,
)
from swell._logging.format import utc_time
from swell._protocol import backend_name

# The first read of a file starts this far from its end (at a line boundary).
FIRST_READ_BYTES = 256 << 10
# One read of a file takes at most this much.
MAX_READ_BYTES = 4 << 20


@dataclass(frozen=True)
class LogFile:
    path: Path
    kind: str  # "controller", "haproxy" or "replica"


def find_log_files(
    directories: Iterable[Path], app_name: str | None = None, deployment: str | None = None
) -> list[LogFile]:
    """The files in ``directories`` that concern ``app_name`` (and ``deployment``)."""
    found: dict[Path, LogFile] = {}
    for directory in directories:
        if app_name is None:
            found.setdefault(
                directory / CONTROLLER_FILE, LogFile(directory / CONTROLLER_FILE, "controller")
            )
        if deployment is None:
            found.setdefault(directory / HAPROXY_FILE, LogFile(directory / HAPROXY_FILE, "haproxy"))
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            continue
        for name in names:
            if not name.startswith(REPLICA_PREFIX) or not name.endswith(SUFFIX):
                continue
            parsed = parse_replica_file_name(name)
            if parsed is None:
                continue
            app, dep, _ = parsed
            if (app_name is None or app == app_name) and (deployment is None or dep == deployment):
                found.setdefault(directory / name, LogFile(directory / name, "replica"))
    return [f for f in found.values() if f.path.is_file()]


def _parse_text_time(line: str) -> float | None:
    # "2026-12-01 13:58:31.123 ..."
    if len(line) < 23 or line[4] != "-" or line[10] != " " or line[19] != ".":
        return None
    try:
        whole = calendar.timegm(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        return whole + int(line[20:23]) / 1000
    except ValueError:
        return None


def _parse_json_time(line: str) -> float | None:
    try:
        document = json.loads(line)
        return int(document["timestamp_ns"]) / 1e9
    except (ValueError, KeyError, TypeError):
        return None


def _parse_haproxy(line: str) -> tuple[float, str] | None:
    stamp, _, rest = line.partition(" ")
    seconds, dot, millis = stamp.partition(".")
    if not (dot and seconds.isdigit() and millis.isdigit()):
        return None
    when = int(seconds) + int(millis) / 1000
    return when, f"{utc_time(when)} {rest}"


def start_of_record(line: str, kind: str) -> tuple[float, str] | None:
    """(time, text to show) when ``line`` begins a record, else None (a continuation)."""
    if kind == "haproxy":
        return _parse_haproxy(line)
    when = _parse_json_time(line) if line.startswith("{") else _parse_text_time(line)
    return None if when is None else (when, line)


def _read_new(path: Path, offset: int | None) -> tuple[str, int]:
    """Complete lines after ``offset`` (None: near the end), and the offset after them."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, 2)
            if offset is None or offset > size:  # first read, or the file was replaced
                offset = max(0, size - FIRST_READ_BYTES) if offset is None else 0
                skip_partial = offset > 0
            else:
                skip_partial = False
            file.seek(offset)
            data = file.read(MAX_READ_BYTES)
    except OSError:
        return "", offset or 0
    end = data.rfind(b"\n") + 1
    start = 0
    if skip_partial:
        start = data.find(b"\n") + 1
    return data[start:end].decode("utf-8", "replace"), offset + end


def read_records(
    files: list[LogFile], cursor: dict[str, int] | None, app_name: str | None = None
) -> tuple[list[tuple[float, str]], dict[str, int]]:
    """New records from ``files`` after ``cursor`` (None: the recent ones), merged by time."""
    cursor = dict(cursor or {})
    first = not cursor
    records: list[tuple[float, int, str]] = []
    haproxy_backend = f" {backend_name(app_name)}/" if app_name is not None else None
    for file in files:
        key = str(file.path)
        offset = cursor.get(key)
        text, cursor[key] = _read_new(file.path, None if first else (offset or 0))
        current: list[str] | None = None
        when = 0.0
        for line in text.split("\n")[:-1] if text else []:
            start = start_of_record(line, file.kind)
            if start is None and file.kind == "haproxy" and app_name is None:
                # One of HAProxy's own messages (no time of its own): after the line before.
                start = (when, line)
            if start is None:
                if current is not None:
                    current.append(line)
                continue
            if current is not None:
                records.append((when, len(records), "\n".join(current)))
            when, shown = start
            keep = haproxy_backend is None or file.kind != "haproxy" or haproxy_backend in line
            current = [shown] if keep else None
        if current is not None:
            records.append((when, len(records), "\n".join(current)))
    records.sort()
    return [(when, text) for when, _, text in records], cursor
