"""Where log files live and how records reach them.

One directory per instance: the state dir's ``logs/`` when there is one, else a private
directory of its own under the runtime directory (kept after shutdown, for reading; the ten
most recent stopped instances' are kept). In it:
``controller.log``, ``haproxy.log`` and ``replica_<app>+<replica id>.log`` for each replica (a
replica id is ``<deployment>-<8 hex digits>``, and names cannot hold ``+``, so a file name says
whose it is). A deployment's ``logging_config.logs_dir`` puts its replicas' files there instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from pathlib import Path

from swell._private_files import open_private_log, private_dir, runtime_dir
from swell._procs import pid_alive

CONTROLLER_FILE = "controller.log"
HAPROXY_FILE = "haproxy.log"
REPLICA_PREFIX = "replica_"
SUFFIX = ".log"


def replica_file_name(app_name: str, replica_id: str) -> str:
    return f"{REPLICA_PREFIX}{app_name}+{replica_id}{SUFFIX}"


def parse_replica_file_name(name: str) -> tuple[str, str, str] | None:
    """(app, deployment, replica id) of a replica's file name; None for any other file."""
    if not (name.startswith(REPLICA_PREFIX) and name.endswith(SUFFIX)):
        return None
    app_name, plus, replica_id = name[len(REPLICA_PREFIX) : -len(SUFFIX)].partition("+")
    deployment, dash, _ = replica_id.rpartition("-")
    if not plus or not dash:
        return None
    return app_name, deployment, replica_id


# Logs directories of instances without a state dir kept for reading after they stopped.
KEEP_STOPPED_INSTANCES = 10
# How long access lines wait to share a write (a replica writes them all as it exits).
LINES_FLUSH_S = 0.05


def instance_logs_dir(state_dir: Path | None) -> Path:
    """The logs directory of an instance starting now (created, mode 0700)."""
    if state_dir is not None:
        return private_dir(state_dir / "logs", "the logs directory")
    parent = private_dir(runtime_dir() / "logs", "the logs directory")
    _prune(parent)
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return private_dir(parent / f"{stamp}-{os.getpid()}", "the logs directory")


def _prune(parent: Path) -> None:
    """Remove the oldest stopped instances' directories (``<time>-<pid>``), keeping a few."""
    stopped = []
    for entry in sorted(parent.iterdir()):
        stamp, _, pid = entry.name.rpartition("-")
        if not (stamp and pid.isdigit() and entry.is_dir() and not entry.is_symlink()):
            continue
        if not pid_alive(int(pid)):
            stopped.append(entry)
    for entry in stopped[: max(0, len(stopped) - KEEP_STOPPED_INSTANCES)]:
        shutil.rmtree(entry, ignore_errors=True)


class AppendHandler(logging.Handler):
    """Appends each formatted record to a file (0600, never through a symlink) in one write.

    One ``write`` per record, with ``O_APPEND``: lines from several threads never interleave,
    and ``swell logs --follow`` sees a line as soon as it is logged. Like ``FileHandler``, it
    reopens its file after a ``close()`` (``logging.config.dictConfig``, which uvicorn calls,
    closes every handler in the process); one made on a descriptor keeps it.
    """

    def __init__(self, path: Path | None = None, fd: int | None = None) -> None:
        super().__init__()
        if fd is None:
            assert path is not None
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = open_private_log(path)
        self.fd = fd
        self.path = path
        self._pending: list[str] = []  # write_line's lines waiting for LINES_FLUSH_S
        self._pending_thread = 0  # the loop's thread, where they wait
        self.flushes_scheduled = 0  # held by the regression tests: timers, not lines

    def emit(self, record: logging.LogRecord) -> None:
        if self._pending and threading.get_ident() == self._pending_thread:
            self.flush_pending()  # the access lines before it come first
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self.fd < 0 and self.path is not None:
                self.fd = open_private_log(self.path)
            os.write(self.fd, data)
        except Exception:
            self.handleError(record)

    def write_line(self, line: str) -> None:
        """A line formatted elsewhere (the access log's fast path). On an event loop, lines
        wait up to ``LINES_FLUSH_S`` and go out in one write (a write per request cost a
        replica about 2 us of each small request); elsewhere at once. A record logged on the
        loop's thread sends the waiting lines first, so the file keeps their order."""
        pending = self._pending
        if pending:
            pending.append(line)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write_lines([line])
            return
        pending.append(line)
        self._pending_thread = threading.get_ident()
        self.flushes_scheduled += 1
        loop.call_later(LINES_FLUSH_S, self.flush_pending)

    def flush_pending(self) -> None:
        lines, self._pending = self._pending, []
        if lines:
            self._write_lines(lines)

    def _write_lines(self, lines: list[str]) -> None:
        try:
            if self.fd < 0 and self.path is not None:
                self.fd = open_private_log(self.path)
            data = "\n".join(lines) + "\n"
            os.write(self.fd, data.encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # as logging does by default (raiseExceptions aside): never fail a request

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self.path is not None and self.fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(self.fd)
                self.fd = -1
        super().close()
