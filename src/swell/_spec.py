"""What the controller hands a replica process to start it: picklable, self-contained."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from swell._cluster_tls import ClusterTLS
from swell._pickling import register_reducers
from swell.config import DeploymentConfig


@dataclass(frozen=True)
class CallableRef:
    """Where a replica finds its deployment: a module attribute, or pickled bytes."""

    module: str | None = None
    attribute: str | None = None
    pickled: bytes | None = None

    def load(self) -> Any:
        if self.pickled is not None:
            return cloudpickle.loads(self.pickled)
        assert self.module is not None and self.attribute is not None
        target: Any = importlib.import_module(self.module)
        for part in self.attribute.split("."):
            target = getattr(target, part)
        return target


def reference_to(obj: Any, fallback: Any) -> CallableRef:
    """Refer to ``obj`` by module and name when a fresh process can import it, else pickle."""
    module_name = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    module = sys.modules.get(module_name or "")
    if module is not None and module_name != "__main__" and qualname and "<" not in qualname:
        target: Any = module
        for part in qualname.split("."):
            target = getattr(target, part, None)
        # The attribute may be the decorated Deployment, or the one .options() started from.
        if target is fallback or target is obj or getattr(target, "func_or_class", None) is obj:
            return CallableRef(module=module_name, attribute=qualname)
    register_reducers()  # e.g. a FastAPI app defined in __main__ travels with the class
    return CallableRef(pickled=cloudpickle.dumps(fallback))


@dataclass(frozen=True)
class ReplicaSpec:
    """Everything one replica needs; sent to the process on its stdin."""

    replica_id: str
    app_name: str
    deployment_name: str
    route_prefix: str | None
    deployment_ref: CallableRef
    init_args: bytes
    config: DeploymentConfig
    version: str
    host: str = "127.0.0.1"
    sys_path: list[str] = field(default_factory=list)
    cluster_token: str = ""
    controller_url: str = ""
    # With a state dir the controller can be restarted and adopt its replicas, so they must
    # not exit when it does.
    survive_controller: bool = False
    env_vars: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    # http_options.max_request_body_bytes, enforced by the replica for chunked bodies.
    max_request_body_bytes: int | None = None
    # The replica's place among its deployment's replicas (ReplicaContext.rank, world_size).
    rank: int = 0
    world_size: int = 1
    # grpc_options for an ingress replica: it serves these services on a gRPC port of its own.
    grpc_servicer_functions: tuple[str, ...] = ()
    grpc_request_timeout_s: float | None = None
    # The instance's logs directory (the replica's file goes there unless its
    # logging_config.logs_dir says otherwise); None: log to the inherited stderr only.
    logs_dir: str | None = None
    # --tls-cert/--tls-key/--tls-ca: the replica's listeners (data plane, HTTP, control) use
    # TLS, and its own handle calls verify other replicas against the CA. Paths only.
    tls: ClusterTLS | None = None

    def dumps(self) -> bytes:
        payload: bytes = cloudpickle.dumps(self)
        return payload
