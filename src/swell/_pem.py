"""Reading PEM files a user named, with errors that say which option named them."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from swell.exceptions import ConfigError


def read_file(named: str, path: str) -> bytes:
    """The file's bytes; ``named`` says where the path came from (an option, a flag)."""
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{named} cannot be read: {error.strerror or error}") from None


def certificates(named: str, path: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file; at least one, or a ConfigError naming the file."""
    data = read_file(named, path)  # outside the try: its ConfigError is a ValueError too
    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ConfigError(
            f"{named} holds no PEM certificate (expected '-----BEGIN CERTIFICATE-----' blocks)"
        )
    return found
