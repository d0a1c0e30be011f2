"""The controller's calls to replicas' control ports: health, load, reconfigure.

Every call carries the cluster token and has a deadline; failures come back as values (the
controller decides what a failed check means), never as exceptions.
"""

from __future__ import annotations

import pickle
from typing import Any

import httpx

from swell._cluster_tls import ClusterTLS, client_limits
from swell._protocol import (
    CLUSTER_TOKEN_HEADER,
    CONTROL_HEALTH_PATH,
    CONTROL_METRICS_PATH,
    CONTROL_RECONFIGURE_PATH,
    CONTROL_STATS_PATH,
)

_LOAD_TIMEOUT_S = 2.0


class ReplicaClient:
    """One pooled HTTP client for every replica's control port."""

    def __init__(self, cluster_token: str, tls: ClusterTLS | None = None) -> None:
        """``tls``: replicas' control ports speak TLS; verify them against the cluster CA."""
        self._http = httpx.AsyncClient(
            headers={CLUSTER_TOKEN_HEADER: cluster_token},
            verify=tls.client_context() if tls else True,
            limits=client_limits(tls),
        )
        self._scheme = "https" if tls else "http"

    async def aclose(self) -> None:
        await self._http.aclose()

    async def check_health(self, control_address: str, timeout_s: float) -> tuple[bool, str]:
        """Run the replica's check_health(); (ok, detail)."""
        try:
            response = await self._http.get(
                f"{self._scheme}://{control_address}{CONTROL_HEALTH_PATH}", timeout=timeout_s
            )
        except httpx.HTTPError as error:
            return False, f"{type(error).__name__}: {error}"
        return response.status_code == 200, response.text

    async def reconfigure(
        self, control_address: str, user_config: Any, timeout_s: float
    ) -> tuple[bool, str]:
        """Hand the replica a new user_config; (ok, detail)."""
        try:
            response = await self._http.post(
                f"{self._scheme}://{control_address}{CONTROL_RECONFIGURE_PATH}",
                content=pickle.dumps(user_config),
                timeout=timeout_s,
            )
        except httpx.HTTPError as error:
            return False, f"{type(error).__name__}: {error}"
        return response.status_code == 200, response.text

    async def metrics(self, control_address: str, timeout_s: float) -> list[Any] | None:
        """The replica's metric families (JSON snapshots); None if it did not answer."""
        try:
            response = await self._http.get(
                f"{self._scheme}://{control_address}{CONTROL_METRICS_PATH}", timeout=timeout_s
            )
            response.raise_for_status()
            families = response.json()
        except (httpx.HTTPError, ValueError):
            return None
        return families if isinstance(families, list) else None

    async def load(self, control_address: str) -> int | None:
        """Requests and handle calls in flight on the replica; None if it did not answer."""
        try:
            response = await self._http.get(
                f"{self._scheme}://{control_address}{CONTROL_STATS_PATH}", timeout=_LOAD_TIMEOUT_S
            )
            return int(response.json()["load"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            return None
