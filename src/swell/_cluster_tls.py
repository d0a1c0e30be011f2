"""TLS between swell's own processes: checked once at start, then SSL contexts on each side.

One certificate and key (``tls_cert``/``tls_key``) serve every swell listener in the cluster
(replicas' data plane, HTTP and control ports); callers verify it against ``tls_ca`` (default:
the certificate itself, for a self-signed cluster certificate). Hostnames are not checked:
replicas are addressed by IP addresses Ray or the OS picks, which no certificate could list in
advance. Holding a certificate the cluster CA signed is what proves a listener is swell's, and
the cluster token's handshake (``_dataplane/handshake.py``) still authenticates both ends on top.

Only paths travel (in the replica spec); every node reads the same files (a mounted Secret on
Kubernetes), so the key never crosses the network.
"""

from __future__ import annotations

import functools
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from swell import _pem as pem
from swell.exceptions import ConfigError

_PATH_WORD = re.compile(r"[A-Za-z0-9/._+\-]+")
_FLAGS = {"tls_cert": "--tls-cert", "tls_key": "--tls-key", "tls_ca": "--tls-ca"}


@dataclass(frozen=True)
class ClusterTLS:
    """Absolute paths of the cluster certificate, its key and the CA callers trust."""

    cert: str
    key: str
    ca: str

    def server_context(self) -> ssl.SSLContext:
        return _server_context(self.cert, self.key)

    def client_context(self) -> ssl.SSLContext:
        return client_context(self.ca)


@functools.lru_cache(maxsize=8)
def _server_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


@functools.lru_cache(maxsize=8)
def client_context(ca: str) -> ssl.SSLContext:
    """Verify the peer's certificate against ``ca`` only (no hostname: see the module doc)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(ca)
    return context


def client_limits(tls: ClusterTLS | None) -> httpx.Limits:
    """Pool limits for an httpx client that talks to replicas (the controller's clients).

    Over TLS, no idle connection is kept: a replica shutting down sends close_notify on each
    idle one and (uvicorn) waits for the answer, which a pooled connection nobody reads never
    gives, so each stop would take the whole graceful_shutdown_timeout_s. A handshake per call
    is cheap at the controller's rate (health checks and load polls).
    """
    if tls is None:
        return httpx.Limits()
    return httpx.Limits(max_keepalive_connections=0)


def _named(field: str, path: str) -> str:
    return f"{_FLAGS[field]} ({field}) {path!r}"


def _read(field: str, path: str) -> bytes:
    return pem.read_file(_named(field, path), path)


def _certificates(field: str, path: str) -> list[x509.Certificate]:
    return pem.certificates(_named(field, path), path)


def _public(certificate: x509.Certificate) -> bytes:
    return certificate.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _issued_by(certificate: x509.Certificate, authorities: list[x509.Certificate]) -> bool:
    for authority in authorities:
        if certificate == authority:
            return True
        try:
            certificate.verify_directly_issued_by(authority)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _check_path_words(field: str, ca: str) -> None:
    """HAProxy's runtime API takes the CA's path as one word: no spaces, quotes or '#'."""
    path = str(Path(ca).resolve())
    if not _PATH_WORD.fullmatch(path):
        raise ConfigError(
            f"{_named(field, ca)} resolves to {path!r}, which HAProxy "
            "cannot take as one word: use a path of letters, digits and / . _ - + only"
        )


def load(cert: str | None, key: str | None, ca: str | None) -> ClusterTLS | None:
    """Check the files and that they fit together; None when TLS is off (no ``cert``)."""
    if cert is None or key is None:
        return None
    chain = _certificates("tls_cert", cert)
    key_data = _read("tls_key", key)
    try:
        private = serialization.load_pem_private_key(key_data, None)
    except TypeError:
        raise ConfigError(
            f"{_named('tls_key', key)} is encrypted: swell's processes start unattended, so "
            "the cluster key must be unencrypted (protect the file instead, e.g. mode 0600 or "
            "a Kubernetes Secret)"
        ) from None
    except ValueError:
        raise ConfigError(f"{_named('tls_key', key)} is not a PEM private key") from None
    public = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if public != _public(chain[0]):
        raise ConfigError(
            f"{_named('tls_key', key)} is not the key of the certificate in "
            f"{_named('tls_cert', cert)}"
        )
    authorities = _certificates("tls_ca", ca) if ca is not None else chain[:1]
    if not any(_issued_by(c, authorities) for c in chain):
        raise ConfigError(
            f"{_named('tls_cert', cert)} is not signed by the CA in "
            f"{_named('tls_ca', ca or cert)}: peers would refuse it; pass the CA that signed "
            "it with --tls-ca"
        )
    _check_path_words("tls_ca" if ca is not None else "tls_cert", ca or cert)
    resolved = ClusterTLS(
        str(Path(cert).resolve()),
        str(Path(key).resolve()),
        str(Path(ca or cert).resolve()),
    )
    try:
        resolved.server_context()
        resolved.client_context()
    except ssl.SSLError as error:
        raise ConfigError(
            f"{_named('tls_cert', cert)} with {_named('tls_key', key)} cannot be used for "
            f"TLS: {error}"
        ) from None
    return resolved
