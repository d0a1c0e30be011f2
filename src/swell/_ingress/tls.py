"""HTTPS at the ingress: check the user's certificate files and build the PEM HAProxy loads.

HAProxy wants the certificate chain and its key in one file, and cannot prompt for a key's
password. swell reads the files (each error names the http_options field), decrypts the key in
memory, and writes chain + key to the private runtime directory with mode 0600. The password is
never written anywhere nor passed to another process.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from swell import _pem as pem
from swell._ingress.haproxy_config import TLSSettings
from swell.config import HTTPOptions
from swell.exceptions import ConfigError

BUNDLE_NAME = "tls.pem"


def _read(field: str, path: str) -> bytes:
    return pem.read_file(f"http_options.{field}={path!r}", path)


def _certificates(field: str, path: str) -> list[x509.Certificate]:
    return pem.certificates(f"http_options.{field}={path!r}", path)


def _public_pem(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def build_bundle(options: HTTPOptions, runtime_dir: Path) -> TLSSettings | None:
    """Validate the TLS fields and write the bundle; None when HTTPS is not configured."""
    if options.ssl_certfile is None or options.ssl_keyfile is None:
        return None
    chain = _certificates("ssl_certfile", options.ssl_certfile)
    key_data = _read("ssl_keyfile", options.ssl_keyfile)
    secret = options.ssl_keyfile_password
    password = secret.get_secret_value().encode() if secret is not None else None
    try:
        key = serialization.load_pem_private_key(key_data, password)
    except TypeError:
        if password is None:
            raise ConfigError(
                f"http_options.ssl_keyfile={options.ssl_keyfile!r} is encrypted: set "
                "http_options.ssl_keyfile_password"
            ) from None
        raise ConfigError(
            f"http_options.ssl_keyfile={options.ssl_keyfile!r} is not encrypted: remove "
            "http_options.ssl_keyfile_password"
        ) from None
    except ValueError:
        raise ConfigError(
            f"http_options.ssl_keyfile={options.ssl_keyfile!r} could not be loaded: not a PEM "
            "private key, or http_options.ssl_keyfile_password is wrong"
        ) from None
    if _public_pem(key.public_key()) != _public_pem(chain[0].public_key()):
        raise ConfigError(
            f"http_options.ssl_keyfile={options.ssl_keyfile!r} is not the key of the "
            f"certificate in http_options.ssl_certfile={options.ssl_certfile!r}"
        )
    client_ca = None
    if options.ssl_ca_certs is not None:
        _certificates("ssl_ca_certs", options.ssl_ca_certs)
        client_ca = str(Path(options.ssl_ca_certs).resolve())
    bundle = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
    bundle += key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = runtime_dir / BUNDLE_NAME
    _write_private(path, bundle)
    return TLSSettings(str(path), client_ca)


def _write_private(path: Path, data: bytes) -> None:
    """Written with mode 0600 from the first byte, then renamed into place."""
    temporary = path.with_suffix(".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file of that name may have had another mode
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    temporary.replace(path)
