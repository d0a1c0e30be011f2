"""A driver's view of the controller actor: what ``swell.start(address=...)`` returns.

It offers the calls the public API makes on an in-process instance (``call``, ``status``,
``deploy_prepared``, ``stop``), each forwarded to the detached ``SWELL_CONTROLLER`` actor,
which it creates on the head node unless one already runs.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import cloudpickle

from swell._cluster_tls import load as load_cluster_tls
from swell._dataplane.router import ClusterContext
from swell._ray.cluster import NAMESPACE, RayConnection, connect, import_ray
from swell.config import ControllerOptions, HTTPOptions
from swell.exceptions import ConfigError
from swell.handle import close_routers, set_cluster_context

logger = logging.getLogger("swell.ray.driver")

T = TypeVar("T")

_START_DEADLINE_S = 120.0
_CALL_GRACE_S = 10.0
# The resource Ray gives only the head node: the controller actor is pinned there, so a
# restarted one comes back on the same machine, at the same ports.
_HEAD_RESOURCE = "node:__internal_head__"


def controller_actor_options() -> dict[str, Any]:
    from swell._ray.controller_actor import CONTROLLER_NAME

    return {
        "name": CONTROLLER_NAME,
        "namespace": NAMESPACE,
        "lifetime": "detached",  # outlives the driver that made it
        "max_restarts": -1,  # Ray starts it again whenever its process dies
        "max_concurrency": 64,  # status, deploys and long calls at once
        "num_cpus": 0,
        "resources": {_HEAD_RESOURCE: 0.001},
    }


def get_controller() -> Any | None:
    """The running controller actor, if any."""
    ray = import_ray()
    from swell._ray.controller_actor import CONTROLLER_NAME

    try:
        return ray.get_actor(CONTROLLER_NAME, namespace=NAMESPACE)
    except ValueError:
        return None


class RemoteInstance:
    """The cluster's controller actor, as the public API drives an instance."""

    def __init__(self, http_options: HTTPOptions, controller_options: ControllerOptions) -> None:
        self.http_options = http_options
        self.controller_options = controller_options
        # Checked on this machine first (every node must hold the same files at these paths).
        load_cluster_tls(
            controller_options.tls_cert, controller_options.tls_key, controller_options.tls_ca
        )
        self._connection: RayConnection | None = None
        self._actor: Any = None
        self.admin_port: int | None = None
        self.admin_token = ""
        self.pid: int | None = None
        self.cluster_token = ""
        self.created = False

    @property
    def on_ray(self) -> bool:
        return True

    def start(self) -> None:
        """Connect, and find or create the controller actor; return once it serves."""
        assert self.controller_options.address is not None
        self._connection = connect(self.controller_options.address)
        ray = import_ray()
        try:
            actor = get_controller()
            if actor is None:
                from swell._ray.controller_actor import SwellController

                actor = (
                    ray.remote(SwellController)
                    .options(**controller_actor_options(), get_if_exists=True)
                    .remote(self.http_options, self.controller_options, list(sys.path), os.getcwd())
                )
                self.created = True
            info = ray.get(actor.ready.remote(), timeout=_START_DEADLINE_S)
        except ConfigError:
            self._disconnect()
            raise
        except Exception as error:
            self._disconnect()
            raise ConfigError(
                f"the swell controller actor did not start on the Ray cluster: {error}"
            ) from None
        self._actor = actor
        self.admin_port = info["admin_port"]
        self.admin_token = info["admin_token"]
        self.pid = info["pid"]
        self.cluster_token = info["cluster_token"]
        # Handles made in this process call replicas directly, as the controller's own do.
        set_cluster_context(
            ClusterContext(info["controller_url"], info["cluster_token"], info.get("tls_ca"))
        )
        running: HTTPOptions = info["http_options"]
        if not self.created and running != self.http_options:
            logger.warning(
                "the cluster's swell controller already runs with http_options %s; %s is "
                "ignored (shut it down first to change them)",
                running.model_dump(exclude_defaults=True),
                self.http_options.model_dump(exclude_defaults=True),
            )

    def _disconnect(self) -> None:
        set_cluster_context(None)
        close_routers()
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _get(self, ref: Any, timeout: float) -> Any:
        """The actor's answer; an error it raised (a ConfigError, a failed deploy) as itself."""
        ray = import_ray()
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, Exception):
                raise cause from None
            raise

    def call(self, make: Callable[[Any], Coroutine[Any, Any, T]], timeout: float) -> T:
        result: T = self._get(
            self._actor.call.remote(cloudpickle.dumps(make), timeout), timeout + _CALL_GRACE_S
        )
        return result

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self._get(self._actor.status.remote(), 30.0)
        return status

    def deploy_prepared(self, prepared: Any, timeout: float) -> None:
        self._get(
            self._actor.deploy.remote(cloudpickle.dumps(prepared), list(sys.path), timeout),
            timeout + _CALL_GRACE_S,
        )

    def submit_config_threadsafe(self, document: Any, timeout: float = 30.0) -> None:
        self._get(self._actor.submit_config.remote(document, timeout), timeout + _CALL_GRACE_S)

    @property
    def running(self) -> bool:
        """Whether the controller actor still exists (it may be restarting)."""
        return get_controller() is not None

    def stop(self) -> None:
        """Shut the cluster's controller down: its replicas drain, its proxies stop."""
        ray = import_ray()
        if self._actor is not None:
            try:
                self._get(self._actor.shutdown.remote(), 180.0)
            except Exception as error:  # already gone, or stuck
                logger.warning("the controller actor did not shut down cleanly: %s", error)
            deadline = time.monotonic() + 10.0
            while get_controller() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            try:
                ray.kill(self._actor, no_restart=True)
            except Exception as error:  # already gone
                logger.debug("controller actor already gone: %s", error)
            self._actor = None
        self._disconnect()

    def detach(self) -> None:
        """Leave the controller running (it is detached) and disconnect: a script's exit."""
        self._actor = None
        self._disconnect()
