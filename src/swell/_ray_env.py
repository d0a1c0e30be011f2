"""The environment variables swell reads, all for compatibility with Ray and KubeRay.

swell takes its options from arguments and config files; these are the exceptions, because
KubeRay and Ray Serve's samples put them on every Ray container and users copy those manifests:

- ``RAY_AUTH_MODE=token`` with ``RAY_AUTH_TOKEN``: a RayCluster with ``authOptions.mode: token``
  gets both on its containers (the token from the cluster's Secret, key ``auth_token``), and the
  operator sends the same token as ``x-ray-authorization: Bearer``. swell's admin API then takes
  that token, so the operator's calls are accepted; it never appears in argv.
- ``RAY_SERVE_ENABLE_HA_PROXY`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED``: Ray Serve's switches for
  its HAProxy ingress and direct replica calls. swell always works that way, so they are
  accepted whatever their value, noted once in the log, and otherwise ignored.
- ``RAY_SERVE_RUN_SYNC_IN_THREADPOOL``: read by each replica, as Ray's replicas read it. ``1``
  (the default, as in Ray) runs plain ``def`` methods in a worker thread; ``0`` runs them on
  the replica's event loop, which saves the thread hand-off and blocks the replica meanwhile.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from swell.exceptions import ConfigError

logger = logging.getLogger("swell")

AUTH_MODE_VAR = "RAY_AUTH_MODE"
AUTH_TOKEN_VAR = "RAY_AUTH_TOKEN"
IGNORED_SWITCHES = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")
SYNC_IN_THREADPOOL_VAR = "RAY_SERVE_RUN_SYNC_IN_THREADPOOL"


def ray_auth_token(environ: Mapping[str, str] | None = None) -> str | None:
    """The token of Ray's token authentication, when it is on (``RAY_AUTH_MODE=token``)."""
    env = os.environ if environ is None else environ
    if env.get(AUTH_MODE_VAR, "").strip().lower() != "token":
        return None
    token = env.get(AUTH_TOKEN_VAR, "").strip()
    if not token:
        raise ConfigError(
            f"{AUTH_MODE_VAR}=token but {AUTH_TOKEN_VAR} is empty or unset. On Kubernetes, "
            "KubeRay sets it from the RayCluster's auth Secret (key auth_token) when the "
            f"cluster has authOptions.mode: token; elsewhere export {AUTH_TOKEN_VAR}, or unset "
            f"{AUTH_MODE_VAR} to let swell make its own admin token."
        )
    return token


def note_ignored_switches(environ: Mapping[str, str] | None = None) -> list[str]:
    """Log (once per call) the Ray Serve switches that are set; swell needs none of them."""
    env = os.environ if environ is None else environ
    present = [name for name in IGNORED_SWITCHES if name in env]
    if present:
        logger.info(
            "%s set: swell always serves through HAProxy with direct replica calls, so "
            "these are accepted and ignored",
            ", ".join(f"{name}={env[name]!r}" for name in present),
        )
    return present


def run_sync_in_threadpool(environ: Mapping[str, str] | None = None) -> bool:
    """Whether plain ``def`` methods run in worker threads (``RAY_SERVE_RUN_SYNC_IN_THREADPOOL``,
    default ``1`` as in Ray), or on the replica's event loop (``0``)."""
    env = os.environ if environ is None else environ
    value = env.get(SYNC_IN_THREADPOOL_VAR, "1").strip().lower()
    if value in ("1", "true"):
        return True
    if value in ("0", "false"):
        return False
    raise ConfigError(
        f"{SYNC_IN_THREADPOOL_VAR}={env[SYNC_IN_THREADPOOL_VAR]!r}: use 1 (plain def methods "
        "run in worker threads, the default) or 0 (they run on the replica's event loop)"
    )
