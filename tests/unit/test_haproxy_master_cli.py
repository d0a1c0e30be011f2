"""The master CLI client: a master that drops the connection after taking a command."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

from swell._ingress.haproxy_process import HAProxyProcess


def test_a_reset_after_the_command_was_sent_is_left_to_the_caller_to_confirm(
    tmp_path: Path,
) -> None:
    """HAProxy 2.8's master now and then resets the connection as it re-executes itself for
    a reload; the reload may well have happened, so it is not reported as refused (the
    caller checks the new worker's generation, as with 2.6's silent close)."""
    master_socket = tmp_path / "master.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(master_socket))
    listener.listen(1)
    listener.settimeout(10)
    received: list[bytes] = []

    def master() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.settimeout(10)
            data = b""
            while len(data) < len("reload"):
                data += connection.recv(len("reload") - len(data))
            # The word is taken; the newline is waited for but left unread, and then the
            # close: a unix socket closed with unread data fails the peer's read (ECONNRESET).
            connection.recv(1, socket.MSG_PEEK)
            received.append(data)

    thread = threading.Thread(target=master, daemon=True)
    thread.start()
    try:
        process = HAProxyProcess(
            "haproxy", tmp_path / "haproxy.cfg", master_socket, tmp_path / "log", False
        )
        answer = asyncio.run(process.master_command("reload"))
    finally:
        thread.join(10)
        listener.close()
    assert answer == ""
    assert received == [b"reload"]
