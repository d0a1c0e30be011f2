"""The exceptions swell raises.

::

    SwellError
    ├── ConfigError            an option, config value or import path is invalid (also ValueError)
    ├── HAProxyError           the ingress could not be started or driven
    │   └── HAProxyNotFoundError
    ├── PortInUseError         a port swell must bind is taken
    ├── DeploymentFailedError  an application could not become healthy
    └── ControllerUnavailableError   no running swell instance answered
"""

from __future__ import annotations


class SwellError(Exception):
    """Base class of every error swell raises on purpose."""


class ConfigError(SwellError, ValueError):
    """An option, config file value or import path is invalid; the message names it."""


class HAProxyError(SwellError):
    """HAProxy could not be started, reloaded or driven through its runtime API."""


class HAProxyNotFoundError(HAProxyError):
    """No HAProxy binary could be found."""


class PortInUseError(SwellError):
    """A port that swell must listen on is already taken."""


class DeploymentFailedError(SwellError):
    """An application's deployments could not become healthy; the message has the cause."""


class ControllerUnavailableError(SwellError):
    """No swell controller answered at the address given."""
