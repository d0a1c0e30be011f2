"""gRPC ingress: a real grpcio client through the real HAProxy to real replica processes.

The test service is compiled from a .proto with grpcio-tools into a temporary directory at
test time, as a user would generate it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

import swell
from swell import api
from swell._protocol import grpc_backend_name
from tests.certs import TestCA
from tests.integration import grpc_apps
from tests.integration.conftest import (
    free_port,
    haproxy_binaries,
    replica_stats,
    shut_down_whole,
    wait_until,
)

PROTO = """
syntax = "proto3";
package swelltest;

message Ask {
  string name = 1;
  int32 count = 2;
  double delay_s = 3;
}

message Reply {
  string text = 1;
  string replica = 2;
}

service Greeter {
  rpc Greet(Ask) returns (Reply);
  rpc Count(Ask) returns (stream Reply);
  rpc Fail(Ask) returns (Reply);
  rpc Slow(Ask) returns (Reply);
  rpc Cancelled(Ask) returns (Reply);
  rpc WithContext(Ask) returns (Reply);
  rpc NotOnTheDeployment(Ask) returns (Reply);
}
"""
SERVICER = "swell_grpc_test_pb2_grpc.add_GreeterServicer_to_server"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Compile the .proto (as `python -m grpc_tools.protoc` would) and import the result."""
    from grpc_tools import protoc

    out = tmp_path_factory.mktemp("proto")
    (out / "swell_grpc_test.proto").write_text(PROTO)
    code = protoc.main(
        [
            "protoc",
            f"-I{out}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(out / "swell_grpc_test.proto"),
        ]
    )
    assert code == 0
    sys.path.insert(0, str(out))  # replicas inherit sys.path, so they find it too
    try:
        import swell_grpc_test_pb2 as pb2
        import swell_grpc_test_pb2_grpc as pb2_grpc

        yield pb2, pb2_grpc
    finally:
        sys.path.remove(str(out))


class GrpcSwell:
    def __init__(self, grpc_port: int, pb2: Any, pb2_grpc: Any) -> None:
        self.channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self.stub = pb2_grpc.GreeterStub(self.channel)
        self.pb2 = pb2


def _start(
    binary: str | None,
    pb2: Any,
    pb2_grpc: Any,
    http_extra: dict[str, Any],
    tls: dict[str, str] | None = None,
    **grpc_extra: Any,
) -> GrpcSwell:
    http: dict[str, Any] = {"host": "127.0.0.1", "port": free_port(), **http_extra}
    if binary:
        http["haproxy_binary"] = binary
    grpc_port = free_port()
    swell.start(
        http_options=http,
        admin_port=0,
        grpc_options={"port": grpc_port, "grpc_servicer_functions": [SERVICER], **grpc_extra},
        **(tls or {}),
    )
    return GrpcSwell(grpc_port, pb2, pb2_grpc)


@pytest.fixture
def grpc_serve(request: pytest.FixtureRequest, generated: Any) -> Iterator[GrpcSwell]:
    pb2, pb2_grpc = generated
    options = dict(getattr(request, "param", {}) or {})
    binary = options.pop("binary", None)
    http_extra = options.pop("http", {})
    tls = None
    if options.pop("tls", False):  # --tls-cert: HAProxy reaches the replica's gRPC over TLS
        ca = TestCA(request.getfixturevalue("tmp_path"))
        cert = ca.issue("cluster")
        tls = {"tls_cert": str(cert.cert), "tls_key": str(cert.key), "tls_ca": str(ca.cert)}
    instance = _start(binary, pb2, pb2_grpc, http_extra, tls, **options)
    with shut_down_whole(instance.channel.close):
        yield instance


def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), error.details()


@pytest.mark.parametrize(
    "grpc_serve",
    [{"binary": b, "tls": tls} for b in haproxy_binaries() for tls in (False, True)],
    indirect=True,
    ids=[f"{b}{'-tls' if tls else ''}" for b in haproxy_binaries() for tls in (False, True)],
)
def test_unary_streaming_and_errors_through_each_haproxy(grpc_serve: GrpcSwell) -> None:
    swell.run(grpc_apps.greeter_app, name="greeter")
    stub, pb2 = grpc_serve.stub, grpc_serve.pb2
    # One application: the `application` metadata may be left out, as in Ray Serve.
    reply, call = stub.Greet.with_call(pb2.Ask(name="ada"), timeout=30)
    assert reply.text == "hello ada"
    trailing = dict(call.trailing_metadata())
    assert trailing["request_id"]
    _, call = stub.Greet.with_call(
        pb2.Ask(name="ada"),
        metadata=(("application", "greeter"), ("request_id", "r-1")),
        timeout=30,
    )
    assert dict(call.trailing_metadata())["request_id"] == "r-1"
    texts = [r.text for r in stub.Count(pb2.Ask(count=3), timeout=30)]
    assert texts == ["hello 0", "hello 1", "hello 2"]
    code, details = _code(lambda: stub.Fail(pb2.Ask(name="bob"), timeout=30))
    assert code is grpc.StatusCode.INTERNAL
    assert "ValueError: cannot greet bob" in details
    code, details = _code(lambda: stub.NotOnTheDeployment(pb2.Ask(), timeout=30))
    assert code is grpc.StatusCode.UNIMPLEMENTED
    assert "NotOnTheDeployment" in details
    reply, call = stub.WithContext.with_call(pb2.Ask(name="cy"), timeout=30)
    assert reply.text == "with context"
    assert dict(call.trailing_metadata())["greeted"] == "cy"
    # The HTTP ingress still serves the same application.
    code, details = _code(
        lambda: stub.Greet(pb2.Ask(), metadata=(("application", "nope"),), timeout=30)
    )
    assert code is grpc.StatusCode.NOT_FOUND
    assert "'nope' not found" in details and "greeter" in details


def _ray_api_call(serve: GrpcSwell, method: str, response: str) -> Any:
    """Call Ray Serve's RayServeAPIService with its documented messages, built in a private
    descriptor pool (Ray's own generated module may share this process's default pool)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fields = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(name="swell_test_ray_api.proto", package="ray.serve")
    listed = file.message_type.add(name="ListApplicationsResponse")
    listed.field.add(
        name="application_names", number=1, type=fields.TYPE_STRING, label=fields.LABEL_REPEATED
    )
    health = file.message_type.add(name="HealthzResponse")
    health.field.add(name="message", number=1, type=fields.TYPE_STRING, label=fields.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    reply = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ray.serve.{response}"))
    call = serve.channel.unary_unary(
        f"/ray.serve.RayServeAPIService/{method}",
        request_serializer=lambda _: b"",  # both requests are empty messages
        response_deserializer=reply.FromString,
    )
    return call(None, timeout=30)


def test_routes_between_two_apps_by_metadata(grpc_serve: GrpcSwell) -> None:
    swell.run(grpc_apps.Greeter.bind("hi"), name="one", route_prefix="/one")
    swell.run(grpc_apps.Greeter.bind("hey"), name="two", route_prefix="/two")
    stub, pb2 = grpc_serve.stub, grpc_serve.pb2
    for app, greeting in (("one", "hi"), ("two", "hey")):
        reply = stub.Greet(pb2.Ask(name="x"), metadata=(("application", app),), timeout=30)
        assert reply.text == f"{greeting} x"
    # Two applications: a call must say which one.
    code, details = _code(lambda: stub.Greet(pb2.Ask(), timeout=30))
    assert code is grpc.StatusCode.NOT_FOUND
    assert "one, two" in details
    # Ray's health service, answered whatever the metadata says.
    listed = _ray_api_call(grpc_serve, "ListApplications", "ListApplicationsResponse")
    assert list(listed.application_names) == ["one", "two"]
    assert _ray_api_call(grpc_serve, "Healthz", "HealthzResponse").message == "success"
    swell.delete("two")
    # The route goes with a reload. The channel's HTTP/2 connection may still be held by the
    # previous HAProxy worker, which keeps the old routes (app two, its replicas gone:
    # UNAVAILABLE) until it hands the connection over; app two never answers again.
    codes: list[grpc.StatusCode] = []

    def not_found() -> bool:
        code, _ = _code(
            lambda: stub.Greet(pb2.Ask(), metadata=(("application", "two"),), timeout=10)
        )
        codes.append(code)
        return code is grpc.StatusCode.NOT_FOUND

    wait_until(not_found, 30, "app two's route to be gone")
    assert set(codes) <= {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE}, codes
    assert stub.Greet(pb2.Ask(name="y"), timeout=30).text == "hi y"


@pytest.mark.parametrize("grpc_serve", [{"request_timeout_s": 1.0}], indirect=True)
def test_deadlines_and_cancellation_reach_the_user_call(grpc_serve: GrpcSwell) -> None:
    swell.run(grpc_apps.greeter_app, name="greeter")
    stub, pb2 = grpc_serve.stub, grpc_serve.pb2
    # The client's deadline: the call ends with DEADLINE_EXCEEDED and the user's call is
    # cancelled in the replica.
    code, _ = _code(lambda: stub.Slow(pb2.Ask(delay_s=60), timeout=0.5))
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: _slow_calls(grpc_serve) == "started 1 cancelled 1", 15, "the cancel")
    # A client that cancels: the same.
    future = stub.Slow.future(pb2.Ask(delay_s=60), timeout=60)
    wait_until(lambda: _slow_calls(grpc_serve) == "started 2 cancelled 1", 15, "the start")
    future.cancel()
    wait_until(lambda: _slow_calls(grpc_serve) == "started 2 cancelled 2", 15, "the cancel")
    # grpc_options.request_timeout_s: the replica ends a call that runs past it.
    code, details = _code(lambda: stub.Slow(pb2.Ask(delay_s=60), timeout=30))
    assert code is grpc.StatusCode.DEADLINE_EXCEEDED
    assert "request_timeout_s" in details
    # A stream that stalls past it: the items sent arrive, then DEADLINE_EXCEEDED.
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stub.Count(pb2.Ask(count=3, delay_s=60), timeout=30):
            received.append(reply.text)
    assert received == ["hello 0"]
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert stub.Slow(pb2.Ask(delay_s=0.01), timeout=30).text == "slept"


def _slow_calls(serve: GrpcSwell) -> str:
    text: str = serve.stub.Cancelled(serve.pb2.Ask(), timeout=30).text
    return text


@pytest.mark.parametrize("grpc_serve", [{"http": {"queue_timeout_s": 0.5}}], indirect=True)
def test_calls_past_max_ongoing_requests_queue_then_get_unavailable(
    grpc_serve: GrpcSwell,
) -> None:
    swell.run(grpc_apps.Greeter.options(max_ongoing_requests=1).bind(), name="greeter")
    stub, pb2 = grpc_serve.stub, grpc_serve.pb2
    instance = api._instance
    assert instance is not None and instance.ingress is not None
    (replica,) = instance.ingress.backends["greeter"].servers
    control = f"127.0.0.1:{replica.check_port}"
    busy = stub.Slow.future(pb2.Ask(delay_s=60), timeout=60)
    wait_until(lambda: replica_stats(control)["ongoing"] == 1, 15, "the slow call to start")
    # The controller sees the call in HAProxy's counts (draining and autoscaling read them).
    assert _on_ingress(instance.ingress.sessions("greeter"))[replica.name] == 1
    # The one slot is taken: HAProxy queues the next call, then gives up (503 -> UNAVAILABLE).
    code, _ = _code(lambda: stub.Greet(pb2.Ask(name="z"), timeout=30))
    assert code is grpc.StatusCode.UNAVAILABLE
    busy.cancel()
    wait_until(lambda: replica_stats(control)["ongoing"] == 0, 15, "the slot to free up")
    assert stub.Greet(pb2.Ask(name="z"), timeout=30).text == "hello z"


def _on_ingress(coroutine: Any) -> Any:
    """Run a call to the instance's HAProxy manager on the controller's loop."""
    instance = api._instance
    assert instance is not None and instance._loop is not None
    return asyncio.run_coroutine_threadsafe(coroutine, instance._loop).result(10)


def _grpc_servers(app: str) -> set[str]:
    """The servers HAProxy has in the app's gRPC backend, in service (not in maintenance)."""
    instance = api._instance
    assert instance is not None and instance.ingress is not None
    state = _on_ingress(instance.ingress.runtime.servers_state())
    servers = state.get(grpc_backend_name(app), {})
    return {name for name, s in servers.items() if not s.maintenance}


def test_membership_follows_scaling_and_replacement(grpc_serve: GrpcSwell) -> None:
    swell.run(grpc_apps.Greeter.options(num_replicas=1).bind("v1"), name="greeter")
    stub, pb2 = grpc_serve.stub, grpc_serve.pb2
    assert stub.Greet(pb2.Ask(name="a"), timeout=30).text == "v1 a"
    first = _grpc_servers("greeter")
    assert len(first) == 1
    # A new version with two replicas: both old replicas are replaced, and HAProxy's gRPC
    # backend follows through the runtime API.
    swell.run(grpc_apps.Greeter.options(num_replicas=2).bind("v2"), name="greeter")
    wait_until(
        lambda: len(_grpc_servers("greeter")) == 2 and not (_grpc_servers("greeter") & first),
        30,
        "the gRPC backend to hold the two new replicas only",
    )
    seen = set()
    for _ in range(40):
        reply = stub.Greet(pb2.Ask(name="b"), timeout=30)
        assert reply.text == "v2 b"
        seen.add(reply.replica)
    assert len(seen) == 2


def test_a_bad_servicer_path_is_refused_before_anything_starts(generated: Any) -> None:
    with pytest.raises(swell.ConfigError, match=r"no_such_module_pb2_grpc\.add_X_to_server"):
        swell.start(
            http_options={"port": free_port()},
            admin_port=0,
            grpc_options={"grpc_servicer_functions": ["no_such_module_pb2_grpc.add_X_to_server"]},
        )
    assert api._instance is None
    port = free_port()
    with pytest.raises(swell.ConfigError, match="both"):
        swell.start(
            http_options={"port": port},
            admin_port=0,
            grpc_options={"port": port, "grpc_servicer_functions": [SERVICER]},
        )
    assert api._instance is None
    with pytest.raises(swell.ConfigError, match="not an import path"):
        swell.start(
            http_options={"port": free_port()},
            admin_port=0,
            grpc_options={"grpc_servicer_functions": ["not a path"]},
        )
    assert api._instance is None


def test_cli_run_non_blocking_serves_a_config_files_grpc_options(
    generated: Any, tmp_path: Path
) -> None:
    """`swell run --non-blocking serve.yaml`: the detached instance starts with the file's
    grpc_options (they apply at start), and the deploy that follows repeats them."""
    pb2, pb2_grpc = generated
    port, admin_port, grpc_port = free_port(), free_port(), free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "http_options": {"host": "127.0.0.1", "port": port},
                "grpc_options": {"port": grpc_port, "grpc_servicer_functions": [SERVICER]},
                "applications": [
                    {"name": "greeter", "import_path": "tests.integration.grpc_apps:greeter_app"}
                ],
            }
        )
    )
    repo = Path(__file__).resolve().parents[2]
    # The generated modules are importable where the test put them, as a user's would be.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    address = f"http://127.0.0.1:{admin_port}"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "swell", *args],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )

    started = cli("run", str(config), "--non-blocking", "--admin-port", str(admin_port))
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            reply = pb2_grpc.GreeterStub(channel).Greet(pb2.Ask(name="cli"), timeout=30)
        assert reply.text == "hello cli"
    finally:
        stopped = cli("shutdown", "-y", "--address", address)
    assert stopped.returncode == 0, stopped.stderr
