"""swell's controller on a Ray cluster: a detached, named actor pinned to the head node.

The actor runs the same instance a ``swell start`` process runs (controller, admin API, wake
server) with the Ray engine and every node's proxy. It checkpoints into the GCS key-value
store; when its process dies Ray starts it again (``max_restarts=-1``) on the head node, and
the new one adopts the replica and proxy actors its predecessor left (they are detached, so
they outlive it), and binds the same ports, so replicas' routers and the CLI find it again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Any

import cloudpickle

from swell._controller.store import SnapshotStore
from swell._instance import SwellInstance
from swell.config import ControllerOptions, HTTPOptions

logger = logging.getLogger("swell.ray.controller")

CONTROLLER_NAME = "SWELL_CONTROLLER"
_CHECKPOINT_KEY = b"swell-controller-checkpoint"
# A restarted controller retries this long when it cannot come back at once (its ports are
# still held by the dying process, say) before it gives up.
_RESTART_RETRY_S = 30.0


def extend_sys_path(paths: list[str]) -> None:
    """Let this process import what the driver imports (the user's modules)."""
    for path in reversed(paths):
        if path not in sys.path:
            sys.path.insert(0, path)


class KVCheckpoint(SnapshotStore):
    """The controller's checkpoint in the GCS key-value store (namespace ``swell``)."""

    def _read(self) -> bytes | None:
        from ray.experimental import internal_kv

        from swell._ray.cluster import NAMESPACE

        data: bytes | None = internal_kv._internal_kv_get(_CHECKPOINT_KEY, namespace=NAMESPACE)
        return data or None

    def _write(self, data: bytes) -> None:
        from ray.experimental import internal_kv

        from swell._ray.cluster import NAMESPACE

        internal_kv._internal_kv_put(_CHECKPOINT_KEY, data, namespace=NAMESPACE)

    def _delete(self) -> None:
        from ray.experimental import internal_kv

        from swell._ray.cluster import NAMESPACE

        internal_kv._internal_kv_del(_CHECKPOINT_KEY, namespace=NAMESPACE)
        self._last = None


class SwellController:
    """The actor; its methods are what a driver's ``RemoteInstance`` calls."""

    def __init__(
        self,
        http_options: HTTPOptions,
        controller_options: ControllerOptions,
        sys_path: list[str],
        cwd: str,
    ) -> None:
        extend_sys_path(sys_path)
        with contextlib.suppress(OSError):
            os.chdir(cwd)  # where a config's relative working_dir and imports resolve
        logging.basicConfig(level=logging.INFO)
        restarted = KVCheckpoint().load() is not None
        deadline = time.monotonic() + (_RESTART_RETRY_S if restarted else 0.0)
        while True:
            instance = SwellInstance(http_options, controller_options, checkpoint=KVCheckpoint())
            try:
                instance.start()
                break
            except Exception:
                if time.monotonic() >= deadline:
                    raise
                logger.exception("the restarted controller could not come back; trying again")
                time.sleep(1.0)
        self._instance = instance
        self._stopped = threading.Event()
        threading.Thread(target=self._exit_when_stopped, name="swell-exit", daemon=True).start()

    def _exit_when_stopped(self) -> None:
        """After a shutdown (``swell shutdown``'s, or ``stop``), end this actor for good."""
        while self._instance.running:
            time.sleep(0.2)
        import ray

        self._stopped.set()
        with contextlib.suppress(Exception):
            ray.kill(ray.get_runtime_context().current_actor, no_restart=True)

    def ready(self) -> dict[str, Any]:
        """Where its admin API listens, and its process."""
        instance, controller = self._instance, self._instance.controller
        assert controller is not None
        return {
            "admin_port": instance.admin_port,
            "admin_token": instance.admin_token,
            "controller_url": controller.controller_url,
            "cluster_token": controller.cluster_token,
            "tls_ca": instance.cluster_tls.ca if instance.cluster_tls else None,
            "http_options": instance.http_options,
            "pid": os.getpid(),
        }

    def status(self) -> dict[str, Any]:
        return self._instance.status()

    def deploy(self, prepared: bytes, sys_path: list[str], timeout: float) -> None:
        """Deploy applications a driver prepared (pickled: they name the driver's modules)."""
        extend_sys_path(sys_path)
        self._instance.deploy_prepared(cloudpickle.loads(prepared), timeout)

    def call(self, make: bytes, timeout: float) -> Any:
        """Run a driver's coroutine function (pickled) on the controller's loop."""
        return self._instance.call(cloudpickle.loads(make), timeout)

    def submit_config(self, document: Any, timeout: float) -> None:
        self._instance.submit_config_threadsafe(document, timeout)

    def shutdown(self) -> None:
        """Stop every replica and proxy, clear the checkpoint; the actor then ends."""
        self._instance.stop()
        self._stopped.wait(10.0)
