"""The TLS bundle HAProxy loads: built from the user's files, errors naming the field."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from swell._ingress.tls import build_bundle
from swell.config import HTTPOptions
from swell.exceptions import ConfigError
from tests.certs import TestCA


def options(**fields: Any) -> HTTPOptions:
    return HTTPOptions(**fields)


def test_no_tls_no_bundle(tmp_path: Path) -> None:
    assert build_bundle(options(), tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_bundle_has_chain_and_plain_key_and_mode_600(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    server = ca.issue("server", password=b"s3cret")
    runtime_dir = tmp_path / "runtime"
    runtime_dir.mkdir()
    tls = build_bundle(
        options(
            ssl_certfile=str(server.cert),
            ssl_keyfile=str(server.key),
            ssl_keyfile_password="s3cret",
            ssl_ca_certs=str(ca.cert),
        ),
        runtime_dir,
    )
    assert tls is not None
    bundle = Path(tls.bundle_path)
    assert stat.S_IMODE(bundle.stat().st_mode) == 0o600
    text = bundle.read_text()
    assert text.startswith("-----BEGIN CERTIFICATE-----")
    assert "-----BEGIN PRIVATE KEY-----" in text and "ENCRYPTED" not in text
    assert "s3cret" not in text
    assert tls.client_ca_path == str(ca.cert.resolve())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"ssl_certfile": "/nonexistent/cert.pem"}, "http_options.ssl_certfile='/nonexistent"),
        ({"ssl_keyfile": "/nonexistent/key.pem"}, "http_options.ssl_keyfile='/nonexistent"),
        ({"ssl_certfile": "KEY"}, "holds no PEM certificate"),
        ({"ssl_keyfile": "CERT"}, "could not be loaded: not a PEM private key"),
        ({"ssl_keyfile": "OTHER_KEY"}, "is not the key of the certificate"),
        ({"ssl_ca_certs": "KEY"}, "http_options.ssl_ca_certs="),
        ({"ssl_keyfile": "LOCKED_KEY"}, "is encrypted: set http_options.ssl_keyfile_password"),
        (
            {"ssl_keyfile": "LOCKED_KEY", "ssl_keyfile_password": "wrong"},
            "http_options.ssl_keyfile_password is wrong",
        ),
        ({"ssl_keyfile_password": "unneeded"}, "is not encrypted: remove"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, change: dict[str, str], expected: str) -> None:
    ca = TestCA(tmp_path)
    server, other = ca.issue("server"), ca.issue("other")
    locked = ca.issue("locked", password=b"right")
    files = {
        "KEY": str(server.key),
        "CERT": str(server.cert),
        "OTHER_KEY": str(other.key),
        "LOCKED_KEY": str(locked.key),
    }
    fields = {"ssl_certfile": str(server.cert), "ssl_keyfile": str(server.key)}
    fields.update({name: files.get(value, value) for name, value in change.items()})
    if change.get("ssl_keyfile") == "LOCKED_KEY":
        fields["ssl_certfile"] = str(locked.cert)
    with pytest.raises(ConfigError) as caught:
        build_bundle(options(**fields), tmp_path)
    assert expected in str(caught.value)
    assert not (tmp_path / "tls.pem").exists()
