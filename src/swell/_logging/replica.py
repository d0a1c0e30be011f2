"""A replica process's logging, from its deployment's ``logging_config``.

Every record (the user's loggers, swell's, uvicorn's) goes to the replica's own file at
``log_level``, formatted by ``encoding``; ``print`` output and anything written to
stdout/stderr become records too (INFO and WARNING), so they carry the same prefix. The
terminal the replica inherited still gets prints and warnings, as before.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from swell._logging.access import AccessLog
from swell._logging.files import AppendHandler, replica_file_name
from swell._logging.format import Component, SwellFormatter
from swell.config import LoggingConfig

PRINT_LOGGER = "swell.print"
# The filename and lineno of access lines in JSON (they have no LogRecord).
_ACCESS_SOURCE = ("access.py", 0)
# Where access lines go (flushed as the replica exits).
_access_targets: list[AppendHandler] = []


class _ToTerminal(logging.Filter):
    """What the inherited terminal shows: prints, and warnings and worse."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name == PRINT_LOGGER


class _LinesToLog(io.TextIOBase):
    """A stdout/stderr that turns each complete line written into a log record."""

    def __init__(self, level: int, fd: int) -> None:
        super().__init__()
        self._logger = logging.getLogger(PRINT_LOGGER)
        self._level = level
        self._fd = fd
        self._pending = ""
        self._lock = threading.RLock()
        self._inside = threading.local()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:
        if getattr(self._inside, "active", False):
            # Logging itself failed and reports it here: straight to the file descriptor.
            os.write(self._fd, text.encode("utf-8", "backslashreplace"))
            return len(text)
        with self._lock:
            self._pending += text
            if "\n" not in self._pending:
                return len(text)
            *lines, self._pending = self._pending.split("\n")
        self._inside.active = True
        try:
            for line in lines:
                self._logger.log(self._level, line)
        finally:
            self._inside.active = False
        return len(text)

    def flush(self) -> None:
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest:
            self._logger.log(self._level, rest)


def configure_replica_logging(
    config: LoggingConfig | None,
    logs_dir: str | None,
    app_name: str,
    deployment: str,
    replica_id: str,
) -> AccessLog:
    """Set up this replica process's logging; returns its access log."""
    config = config or LoggingConfig()
    component = Component("replica", replica_id, app_name, deployment)
    attrs = tuple(config.additional_log_standard_attrs)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(config.log_level)
    # swell's own control traffic (the routers' watch) goes through httpx: not worth a line.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    directory = config.logs_dir or logs_dir
    terminal = AppendHandler(fd=os.dup(2))
    terminal.setFormatter(SwellFormatter(component, "TEXT", attrs))
    to_file: AppendHandler | None = None
    if directory is not None:
        path = Path(directory).expanduser() / replica_file_name(app_name, replica_id)
        try:
            to_file = AppendHandler(path)
        except OSError:
            if config.logs_dir:
                raise  # the user's directory: the replica fails, saying why
            # The instance's directory on another node (Ray) may not be creatable here: the
            # replica still runs, logging to the terminal Ray collects.
    target, formatter = terminal, SwellFormatter(component, "TEXT", attrs)
    if to_file is not None:
        target, formatter = to_file, SwellFormatter(component, config.encoding, attrs)
        to_file.setFormatter(formatter)
        root.addHandler(to_file)
        terminal.addFilter(_ToTerminal())
    root.addHandler(terminal)
    sys.stdout = _LinesToLog(logging.INFO, 1)
    sys.stderr = _LinesToLog(logging.WARNING, 2)
    if attrs:  # attributes of a LogRecord: access lines need one
        return AccessLog(config.enable_access_log)

    def write_access_line(message: str) -> None:
        # Straight to the file: a LogRecord would cost more than a small request itself.
        target.write_line(formatter.format_info(message, _ACCESS_SOURCE))

    _access_targets.append(target)
    return AccessLog(config.enable_access_log, write_access_line)


def flush_prints() -> None:
    """Log what a print left without its newline, and access lines not yet written (called
    as the replica exits)."""
    for stream in (sys.stdout, sys.stderr):
        flush: Any = getattr(stream, "flush", None)
        if flush is not None:
            flush()
    for target in _access_targets:
        target.flush_pending()
