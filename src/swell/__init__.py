"""swell: serve Python models at high throughput, with Ray Serve's programming model.

``import swell as serve`` and Ray Serve code keeps working; HAProxy sits at the ingress.
"""

from swell.api import (
    delete,
    deployment,
    get_replica_context,
    ingress,
    run,
    shutdown,
    start,
    status,
)
from swell.config import AutoscalingConfig, DeploymentConfig, HTTPOptions
from swell.deployment import Application, Deployment
from swell.exceptions import (
    ConfigError,
    DeploymentFailedError,
    HAProxyError,
    HAProxyNotFoundError,
    PortInUseError,
    SwellError,
)

__version__ = "0.1.0"

__all__ = [
    "Application",
    "AutoscalingConfig",
    "ConfigError",
    "Deployment",
    "DeploymentConfig",
    "DeploymentFailedError",
    "HAProxyError",
    "HAProxyNotFoundError",
    "HTTPOptions",
    "PortInUseError",
    "SwellError",
    "delete",
    "deployment",
    "get_replica_context",
    "ingress",
    "run",
    "shutdown",
    "start",
    "status",
]
