"""The ceiling app on swell's replica HTTP server: ``python -m bench._h1_server HOST PORT``.

For ``bench/bench_servers.py``: the same bytes as the uvicorn ceiling, served by
``swell._replica.http_server`` (what replicas run), so the two servers compare like for like.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import sys

import uvloop

from bench._ceiling_app import app
from swell._replica.http_server import HTTPServer


async def _serve(host: str, port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = HTTPServer(keep_alive_s=20)
    await server.start([(sock, app, False)])
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, server.begin_shutdown)
    await server.serve_until_shutdown(5.0)


if __name__ == "__main__":
    uvloop.run(_serve(sys.argv[1], int(sys.argv[2])))
