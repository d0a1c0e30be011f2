"""Calls to a running controller's admin API, with the token found the way the CLI finds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from swell._private_files import find_admin_token, read_token
from swell._protocol import APPLICATIONS_PATH
from swell._ray_env import ray_auth_token
from swell.config import ControllerOptions
from swell.exceptions import ConfigError, ControllerUnavailableError

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def default_admin_address() -> str:
    """Where a local instance started with default options serves its admin API."""
    defaults = ControllerOptions()
    return f"http://{defaults.admin_host}:{defaults.admin_port}"


def resolve_token(address: str, token_file: str | None = None) -> str | None:
    """The admin token: from ``token_file``, else Ray's (``RAY_AUTH_MODE=token``, as in a
    KubeRay pod or Job given the cluster's token), else the one a local instance on that port
    left in this user's runtime directory (only for a loopback address: a local token is never
    sent to another machine)."""
    if token_file is not None:
        token = read_token(Path(token_file).expanduser())
        if token is None:
            raise ConfigError(f"--token-file {token_file} does not exist or is empty")
        return token
    ray_token = ray_auth_token()
    if ray_token is not None:
        return ray_token
    parts = urlsplit(address if "://" in address else f"http://{address}")
    if parts.hostname in _LOOPBACK and parts.port is not None:
        return find_admin_token(parts.port)
    return None


def admin_request(
    address: str,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """One call to a running controller's admin API; its 4xx errors become ConfigError."""
    url = address.rstrip("/") + path
    if token is None:
        token = resolve_token(address)
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise ControllerUnavailableError(
            f"No swell controller answered at {address} ({error}). Start one with "
            "`swell start` or `swell run`, or pass --address."
        ) from None
    if response.status_code == 401:
        raise ConfigError(
            f"The admin API at {address} refused the request without a valid token: run the "
            "command as the user who started swell, or pass --token-file."
        )
    if 400 <= response.status_code < 500:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise ConfigError(message)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def fetch_status(address: str, token: str | None = None) -> dict[str, Any]:
    """Read a running controller's status over its admin API."""
    return admin_request(address, "GET", APPLICATIONS_PATH, token)
