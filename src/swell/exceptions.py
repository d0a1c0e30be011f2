"""The exceptions swell raises.

::

    SwellError
    ├── ConfigError            an option, config value or import path is invalid (also ValueError)
    ├── HAProxyError           the ingress could not be started or driven
    │   └── HAProxyNotFoundError
    ├── PortInUseError         a port swell must bind is taken
    ├── DeploymentFailedError  an application could not become healthy
    ├── ControllerUnavailableError   no running swell instance answered
    ├── BackPressureError      a caller's queue for a deployment is full (HTTP 503)
    ├── RemoteError            user code raised in another replica (type, message, traceback)
    ├── ReplicaUnavailableError   the replica that accepted a call died before answering
    ├── RequestCancelledError  the call was cancelled
    ├── RequestTimeoutError    a handle call ran past its timeout_s (also TimeoutError)
    └── SerializationError     a call's arguments or answer could not be unpickled
"""

from __future__ import annotations

from typing import Any


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


class BackPressureError(SwellError):
    """A caller's queue for a deployment is full (``max_queued_requests``): HTTP 503."""


class RemoteError(SwellError):
    """User code raised in another replica; carries the remote type, message and traceback."""

    def __init__(
        self, remote_type: str, remote_message: str, remote_traceback: str, cause: Any = None
    ) -> None:
        super().__init__(
            f"{remote_type}: {remote_message}\n\nRemote traceback:\n{remote_traceback}"
        )
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        self.cause = cause

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            type(self),
            (self.remote_type, self.remote_message, self.remote_traceback, self.cause),
        )


class ReplicaUnavailableError(SwellError):
    """The replica that accepted a call died or went away before it answered."""


class RequestCancelledError(SwellError):
    """The call was cancelled (by ``cancel()`` or because its client went away)."""


class RequestTimeoutError(SwellError, TimeoutError):
    """A handle call did not finish within its ``timeout_s``; the callee's task is cancelled.

    For a streaming call the limit applies to each wait for the next item.
    """


class SerializationError(SwellError):
    """A call's arguments or answer could not be unpickled where they arrived.

    Raised in the caller for an answer; for arguments, the caller gets a RemoteError whose
    ``remote_type`` is ``SerializationError``. The message names the payload and the cause.
    """
