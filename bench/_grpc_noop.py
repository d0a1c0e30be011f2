"""The gRPC benchmark's service: its .proto (compiled at run time), swell's deployment, and the
ceiling's bare grpc.aio server.

``python -m bench._grpc_noop PROTO_DIR GRPC_PORT CHECK_PORT`` runs the ceiling server: a bare
grpc.aio server (on uvloop, as swell's replicas are) answering the same method, plus a tiny
HTTP listener that answers 200 to HAProxy's health checks, as a replica's control port does.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import swell

PROTO = """
syntax = "proto3";
package benchnoop;

message Msg { string text = 1; }

service Noop {
  rpc Ping(Msg) returns (Msg);
}
"""
MODULE = "bench_noop_pb2"
SERVICER = "bench_noop_pb2_grpc.add_NoopServicer_to_server"


def compile_proto(directory: Path) -> None:
    """Generate bench_noop_pb2(_grpc).py into ``directory`` (which callers put on sys.path)."""
    from grpc_tools import protoc

    (directory / "bench_noop.proto").write_text(PROTO)
    code = protoc.main(
        [
            "protoc",
            f"-I{directory}",
            f"--python_out={directory}",
            f"--grpc_python_out={directory}",
            str(directory / "bench_noop.proto"),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed with status {code}")


@swell.deployment(max_ongoing_requests=100)
class Noop:
    """Ping over gRPC; the same bytes over HTTP (``__call__``), for the HTTP comparison."""

    def __init__(self) -> None:
        import bench_noop_pb2  # type: ignore[import-not-found]

        self._reply = bench_noop_pb2.Msg(text="ok")

    async def Ping(self, request: Any) -> Any:
        return self._reply

    async def __call__(self) -> str:
        return "ok"


noop_app = Noop.bind()


async def _serve_ceiling(grpc_port: int, check_port: int) -> None:
    import bench_noop_pb2
    import bench_noop_pb2_grpc  # type: ignore[import-not-found]
    import grpc

    reply = bench_noop_pb2.Msg(text="ok")

    class Servicer(bench_noop_pb2_grpc.NoopServicer):  # type: ignore[misc]
        async def Ping(self, request: Any, context: Any) -> Any:
            return reply

    server = grpc.aio.server()
    bench_noop_pb2_grpc.add_NoopServicer_to_server(Servicer(), server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()

    async def healthy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    checks = await asyncio.start_server(healthy, "127.0.0.1", check_port)
    async with checks:
        await server.wait_for_termination()


if __name__ == "__main__":
    sys.path.insert(0, sys.argv[1])
    import uvloop

    uvloop.run(_serve_ceiling(int(sys.argv[2]), int(sys.argv[3])))
