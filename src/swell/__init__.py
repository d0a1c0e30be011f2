"""swell: serve Python models at high throughput, with Ray Serve's programming model.

``import swell as serve`` and Ray Serve code keeps working; HAProxy sits at the ingress.
"""

# serve.metrics.Counter / Gauge / Histogram, as in Ray Serve (a module, like swell.llm).
from swell import metrics as metrics
from swell.api import (
    connect,
    delete,
    deployment,
    get_app_handle,
    get_deployment_handle,
    get_replica_context,
    ingress,
    run,
    shutdown,
    start,
    status,
)
from swell.batching import batch
from swell.config import AutoscalingConfig, DeploymentConfig, HTTPOptions
from swell.context import get_request_id
from swell.deployment import Application, Deployment
from swell.exceptions import (
    BackPressureError,
    ConfigError,
    DeploymentFailedError,
    HAProxyError,
    HAProxyNotFoundError,
    PortInUseError,
    RemoteError,
    ReplicaUnavailableError,
    RequestCancelledError,
    RequestTimeoutError,
    SerializationError,
    SwellError,
)
from swell.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from swell.multiplex import get_multiplexed_model_id, multiplexed

__version__ = "0.1.0"

__all__ = [
    "Application",
    "AutoscalingConfig",
    "BackPressureError",
    "ConfigError",
    "Deployment",
    "DeploymentConfig",
    "DeploymentFailedError",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "HAProxyError",
    "HAProxyNotFoundError",
    "HTTPOptions",
    "PortInUseError",
    "RemoteError",
    "ReplicaUnavailableError",
    "RequestCancelledError",
    "RequestTimeoutError",
    "SerializationError",
    "SwellError",
    "batch",
    "connect",
    "delete",
    "deployment",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "get_request_id",
    "ingress",
    "multiplexed",
    "run",
    "shutdown",
    "start",
    "status",
]
