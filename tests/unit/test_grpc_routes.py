"""The gRPC ingress's pure parts: options, the servicer-function loader, HAProxy's config
(golden files and ``haproxy -c`` with each binary) and its membership plan."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from swell._grpc_services import load_service_methods
from swell._ingress.grpc_routes import grpc_backends
from swell._ingress.haproxy_config import BackendEntry, IngressSettings, ServerEntry, render
from swell._ingress.haproxy_reconcile import RepairKind, plan_repairs
from swell._ingress.haproxy_runtime import ObservedServer
from swell.config import HTTPOptions, ServeConfig, gRPCOptions
from swell.exceptions import ConfigError
from tests.unit.test_haproxy_config import haproxy_binaries

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("SWELL_UPDATE_GOLDEN") == "1"

SETTINGS = IngressSettings.from_options(
    HTTPOptions(host="127.0.0.1", port=8000),
    "/run/swell/haproxy.sock",
    4096,
    grpc=gRPCOptions(port=9000, grpc_servicer_functions=["pkg.svc_pb2_grpc.add_S_to_server"]),
)


def server(name: str, port: int, grpc_port: int | None, draining: bool = False) -> ServerEntry:
    return ServerEntry(
        name, f"127.0.0.1:{port}", 5, draining, check_port=port + 1, grpc_port=grpc_port
    )


CASES: dict[str, list[BackendEntry]] = {
    "grpc_one_app": [BackendEntry("default", "/", (server("r1", 9001, 9501),))],
    "grpc_two_apps": [
        BackendEntry("two", "/two", (server("t1", 9101, 9601, draining=True),)),
        BackendEntry("one", "/", (server("o1", 9201, 9701), server("o2", 9301, None))),
    ],
    "grpc_no_apps": [],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden(case: str) -> None:
    golden = GOLDEN_DIR / f"{case}.cfg"
    text = render(SETTINGS, CASES[case])
    if UPDATE_GOLDEN:
        golden.write_bytes(text.encode())
    assert golden.exists(), f"{golden} is missing; run with SWELL_UPDATE_GOLDEN=1"
    assert text.encode() == golden.read_bytes()


@pytest.mark.parametrize("binary", haproxy_binaries())
@pytest.mark.parametrize("case", sorted(CASES))
def test_haproxy_accepts_config(case: str, binary: str, tmp_path: Path) -> None:
    settings = replace(SETTINGS, socket_path=str(tmp_path / "admin.sock"))
    path = tmp_path / "haproxy.cfg"
    path.write_text(render(settings, CASES[case]))
    result = subprocess.run(
        [binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output


def test_no_grpc_frontend_without_servicer_functions() -> None:
    settings = IngressSettings.from_options(
        HTTPOptions(), "/s.sock", 4096, grpc=gRPCOptions(port=9000)
    )
    assert settings.grpc_port is None
    assert "swell_grpc" not in render(settings, CASES["grpc_one_app"])


def test_one_app_needs_no_metadata_but_two_do() -> None:
    one = render(SETTINGS, CASES["grpc_one_app"])
    assert "use_backend grpc_default unless swell_grpc_app_given" in one
    two = render(SETTINGS, CASES["grpc_two_apps"])
    assert "unless swell_grpc_app_given" not in two
    assert "use_backend grpc_one if { req.hdr(application) -m str one }" in two


def test_grpc_backends_mirror_the_http_ones() -> None:
    by_name = {b.name: b for b in grpc_backends(CASES["grpc_two_apps"])}
    assert sorted(by_name) == ["grpc_one", "grpc_two"]
    # The replica without a gRPC port is left out; the others are at their gRPC ports, h2.
    assert [s.address for s in by_name["grpc_one"].servers] == ["127.0.0.1:9701"]
    (drained,) = by_name["grpc_two"].servers
    assert drained.draining and drained.proto == "h2" and drained.check_port == 9102


def _observed(name: str, address: str) -> ObservedServer:
    return ObservedServer(name, address, False, False, True, None)


def test_membership_plan_covers_the_grpc_backends() -> None:
    desired = [BackendEntry("a", "/", (server("new", 9001, 9501),))]
    observed = {
        "app_a": {"new": _observed("new", "127.0.0.1:9001")},
        "grpc_a": {"old": _observed("old", "127.0.0.1:9401")},
    }
    repairs = plan_repairs(desired + grpc_backends(desired), observed)
    assert [(r.kind, r.backend, r.name) for r in repairs] == [
        (RepairKind.REMOVE, "grpc_a", "old"),
        (RepairKind.ADD, "grpc_a", "new"),
    ]
    added = repairs[1].server
    assert added is not None and added.address == "127.0.0.1:9501"


def test_options_follow_ray_names_and_reject_bad_paths() -> None:
    config = ServeConfig(
        grpc_options={  # type: ignore[arg-type]
            "port": 9100,
            "grpc_servicer_functions": ["a.b_pb2_grpc.add_XServicer_to_server"],
            "request_timeout_s": 2,
        }
    )
    assert config.grpc_options.enabled and config.grpc_options.port == 9100
    assert not ServeConfig().grpc_options.enabled
    with pytest.raises(ValueError, match="not an import path"):
        gRPCOptions(grpc_servicer_functions=["add_X; rm"])
    with pytest.raises(ValueError, match="grpc_servicer_typo"):
        ServeConfig(grpc_options={"grpc_servicer_typo": []})  # type: ignore[arg-type]


# The loader, with stand-ins shaped like protoc's generated functions ------------------------


def _handler(streaming: bool) -> Any:
    import grpc

    def method(request: Any, context: Any) -> None:
        return None

    if streaming:
        return grpc.unary_stream_rpc_method_handler(method, bytes, bytes)
    return grpc.unary_unary_rpc_method_handler(method, bytes, bytes)


def add_DemoServicer_to_server(servicer: Any, server: Any) -> None:
    handlers = {
        "Ask": _handler(False),
        "Watch": _handler(True),
    }
    assert callable(servicer.Ask) and callable(servicer.Watch)
    server.add_registered_method_handlers("demo.Demo", handlers)


def add_Nothing_to_server(servicer: Any, server: Any) -> None:
    return None


NOT_CALLABLE = 3


def test_loader_lists_methods_and_names_bad_paths() -> None:
    here = __name__
    methods = load_service_methods([f"{here}.add_DemoServicer_to_server"])
    assert [(m.path, m.name, m.response_streaming) for m in methods] == [
        ("/demo.Demo/Ask", "Ask", False),
        ("/demo.Demo/Watch", "Watch", True),
    ]
    for path, problem in (
        ("nowhere_at_all.add_X_to_server", "cannot be imported"),
        (f"{here}.NOT_CALLABLE", "not the generated"),
        (f"{here}.add_Nothing_to_server", "registered no gRPC service"),
    ):
        with pytest.raises(ConfigError, match=problem) as caught:
            load_service_methods([path])
        assert repr(path) in str(caught.value)
