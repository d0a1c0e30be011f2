"""The public API: what ``import swell`` (or ``import swell as serve``) offers."""

from __future__ import annotations

import inspect

import pytest

import swell
import swell as serve

# Pinned on purpose: adding, removing or renaming a public name must update this list.
EXPECTED_ALL = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert swell.__all__ == EXPECTED_ALL
    assert sorted(swell.__all__) == swell.__all__


def test_every_name_in_all_exists() -> None:
    missing = [name for name in swell.__all__ if not hasattr(swell, name)]
    assert missing == []


@pytest.mark.parametrize(
    "name",
    ["deployment", "ingress", "run", "shutdown", "delete", "status", "get_replica_context"],
)
def test_ray_serve_style_functions(name: str) -> None:
    assert callable(getattr(serve, name))
    assert inspect.isfunction(getattr(serve, name))


@pytest.mark.parametrize("name", ["Application", "Deployment"])
def test_ray_serve_style_classes(name: str) -> None:
    assert inspect.isclass(getattr(serve, name))


def test_exception_hierarchy() -> None:
    assert issubclass(serve.ConfigError, serve.SwellError)
    assert issubclass(serve.ConfigError, ValueError)
    assert issubclass(serve.HAProxyNotFoundError, serve.HAProxyError)
    assert issubclass(serve.DeploymentFailedError, serve.SwellError)
    assert issubclass(serve.PortInUseError, serve.SwellError)
    assert issubclass(serve.RequestTimeoutError, serve.SwellError)
    assert issubclass(serve.RequestTimeoutError, TimeoutError)
    assert issubclass(serve.SerializationError, serve.SwellError)
