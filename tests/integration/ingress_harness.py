"""A real HAProxy driven by an HAProxyManager on its own loop thread, in front of stand-in
replicas (small threaded HTTP servers): the ingress tested alone, in a fraction of a second per
case, against each HAProxy binary on this machine.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

from swell._ingress.haproxy_manager import HAProxyManager
from swell._ingress.haproxy_runtime import ObservedServer
from swell._protocol import CONTROL_READY_PATH, REQUEST_ID_HEADER, ROUTE_PREFIX_HEADER, backend_name
from swell.config import HTTPOptions
from tests.integration.conftest import free_port

T = TypeVar("T")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Upstream

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == CONTROL_READY_PATH:
            self.server.checks += 1
            self._send(200, b"ok", "text/plain")
            return
        if self.path.startswith("/stream"):
            self._stream()
            return
        self.server.requests += 1
        answer = {
            "server": self.server.name,
            "path": self.path,
            "method": self.command,
            "body_bytes": len(body),
            "request_id": self.headers.get(REQUEST_ID_HEADER),
            "route_prefix": self.headers.get_all(ROUTE_PREFIX_HEADER),
        }
        self._send(200, json.dumps(answer).encode())

    def _stream(self) -> None:
        """Chunks with pauses between them: ``/stream?chunks=N&gap=SECONDS``."""
        query = dict(part.split("=") for part in self.path.partition("?")[2].split("&") if part)
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        for index in range(int(query.get("chunks", "3"))):
            if index:
                time.sleep(float(query.get("gap", "0")))
            data = f"chunk {index}\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")


class Upstream(ThreadingHTTPServer):
    """A stand-in replica; with ``control=True`` it answers only health checks (a control port)."""

    daemon_threads = True

    def __init__(self, name: str, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.name = name
        self.tls = tls
        self.checks = 0
        self.requests = 0
        self._thread = threading.Thread(target=self.serve_forever, name=f"upstream-{name}")
        self._thread.start()

    def get_request(self) -> tuple[Any, Any]:
        """With ``tls``, a TLS server; the handshake runs in the request's own thread."""
        connection, address = super().get_request()
        if self.tls is not None:
            connection = self.tls.wrap_socket(
                connection, server_side=True, do_handshake_on_connect=False
            )
        return connection, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a refused TLS handshake is what some tests expect

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(10)


class Ingress:
    """An HAProxyManager running on a loop thread, called synchronously from the test."""

    def __init__(
        self,
        options: HTTPOptions,
        runtime_dir: Path,
        wake_address: str | None = None,
        replica_ca: str | None = None,
    ) -> None:
        self.options = options
        self.port = options.port
        scheme = "https" if options.tls else "http"
        self.url = f"{scheme}://127.0.0.1:{options.port}"
        self.runtime_dir = runtime_dir
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="ingress-test-loop", daemon=True
        )
        self._thread.start()
        self.manager: HAProxyManager = self.call(
            self._make(options, runtime_dir, wake_address, replica_ca)
        )
        self.upstreams: list[Upstream] = []

    @staticmethod
    async def _make(
        options: HTTPOptions, runtime_dir: Path, wake_address: str | None, replica_ca: str | None
    ) -> HAProxyManager:
        return HAProxyManager(options, runtime_dir, wake_address, replica_ca=replica_ca)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def upstream(self, name: str, tls: ssl.SSLContext | None = None) -> Upstream:
        upstream = Upstream(name, tls)
        self.upstreams.append(upstream)
        return upstream

    def servers(self, app: str = "a") -> dict[str, ObservedServer]:
        state = self.call(self.manager.runtime.servers_state())
        return {n: s for n, s in state.get(backend_name(app), {}).items() if n != "swell_wake"}

    def close(self) -> None:
        try:
            self.call(self.manager.stop())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()
            for upstream in self.upstreams:
                upstream.stop()


@contextmanager
def running_ingress(
    binary: str,
    runtime_dir: Path,
    wake_address: str | None = None,
    replica_ca: str | None = None,
    **options: Any,
) -> Iterator[Ingress]:
    """Start an ingress on a free port; stop it (and its stand-ins) whatever happens.

    ``replica_ca``: the stand-in replicas speak TLS (as with --tls-cert); verify against it."""
    settings = HTTPOptions(port=free_port(), haproxy_binary=binary, **options)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    ingress = Ingress(settings, runtime_dir, wake_address, replica_ca)
    try:
        ingress.call(ingress.manager.start())
        yield ingress
    finally:
        ingress.close()
