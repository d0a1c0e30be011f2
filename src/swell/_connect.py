"""Handle calls from a process that did not start swell: a script, a notebook, a test.

Such a process joins the running instance through its admin API: the admin token (found the
way the CLI finds it) buys the cluster token, which routers then present to the controller and
to replicas. Inside a replica the cluster is already known; only the ingress lookup is needed.
"""

from __future__ import annotations

from urllib.parse import quote

import httpx

from swell import handle
from swell._admin_client import admin_request, default_admin_address, resolve_token
from swell._dataplane.router import ClusterContext
from swell._protocol import CLUSTER_PATH, CLUSTER_TOKEN_HEADER, INGRESS_PREFIX
from swell.exceptions import ConfigError, ControllerUnavailableError

_LOOKUP_TIMEOUT_S = 10.0


def connect(address: str | None = None, token_file: str | None = None) -> None:
    """Join the instance whose admin API is at ``address`` (default: this machine's default
    admin port), so that handles work in this process."""
    address = (address or default_admin_address()).rstrip("/")
    token = resolve_token(address, token_file)
    document = admin_request(address, "GET", CLUSTER_PATH, token, timeout_s=_LOOKUP_TIMEOUT_S)
    tls_ca = document.get("tls_ca")
    handle.set_cluster_context(
        ClusterContext(address, str(document["cluster_token"]), str(tls_ca) if tls_ca else None)
    )


def ensure_connected() -> ClusterContext:
    """The cluster this process belongs to, joining the default instance when it has none."""
    cluster = handle.cluster_context()
    if cluster is None:
        connect()
        cluster = handle.cluster_context()
        assert cluster is not None
    return cluster


def ingress_deployment(app_name: str) -> str:
    """The name of ``app_name``'s ingress deployment, asked of the controller."""
    cluster = ensure_connected()
    url = f"{cluster.controller_url}{INGRESS_PREFIX}{quote(app_name, safe='')}"
    try:
        response = httpx.get(
            url,
            headers={CLUSTER_TOKEN_HEADER: cluster.token},
            timeout=_LOOKUP_TIMEOUT_S,
            verify=cluster.http_verify(),
        )
    except httpx.HTTPError as error:
        raise ControllerUnavailableError(
            f"No swell controller answered at {cluster.controller_url} ({error})."
        ) from None
    if response.status_code == 404:
        raise ConfigError(f"No application named {app_name!r} is running.")
    response.raise_for_status()
    return str(response.json()["deployment"])
