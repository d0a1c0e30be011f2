"""Process checks shared by the engines, the HAProxy manager and the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

_POLL_FALLBACK_S = 0.1


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie (it need not be our child)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by someone else
    return _stat_field(pid, 0) != "Z"


def _stat_field(pid: int, index: int) -> str | None:
    """Field ``index`` of /proc/PID/stat counted after the command name (0 is the state)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[index] if index < len(fields) else None


def process_start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot: with the pid, its identity.

    A pid is reused after its process exits; pid and start time together are not, so a
    controller adopting a replica from a checkpoint never signals an unrelated process.
    """
    value = _stat_field(pid, 19)  # field 22 of stat(5), counted after the command name
    return int(value) if value is not None and value.isdigit() else None


def same_process(pid: int, start_time: int | None) -> bool:
    """Whether ``pid`` is still the process that started at ``start_time``."""
    return start_time is not None and pid_alive(pid) and process_start_time(pid) == start_time


def kill_group(pgid: int) -> None:
    """SIGKILL whatever is left of a process group (a replica's engine workers, say)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def wait_for_exit(pid: int) -> asyncio.Future[None]:
    """A future that resolves when ``pid`` exits: through a pidfd, so nothing polls and a
    grandchild holding the process's pipes cannot make a dead process look alive."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future[None] = loop.create_future()
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        exited.set_result(None)
        return exited
    except OSError:  # no pidfd (old kernel, or a seccomp policy): poll instead
        poller = loop.create_task(_poll_exit(pid, exited), name=f"swell-exit-poll-{pid}")
        exited.add_done_callback(lambda _: poller.cancel())
        return exited

    def on_exit() -> None:
        loop.remove_reader(fd)
        os.close(fd)
        if not exited.done():
            exited.set_result(None)

    loop.add_reader(fd, on_exit)

    def on_cancel(future: asyncio.Future[None]) -> None:
        if future.cancelled():
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
                os.close(fd)

    exited.add_done_callback(on_cancel)
    return exited


async def _poll_exit(pid: int, exited: asyncio.Future[None]) -> None:
    while pid_alive(pid) and not exited.done():
        await asyncio.sleep(_POLL_FALLBACK_S)
    if not exited.done():
        exited.set_result(None)
