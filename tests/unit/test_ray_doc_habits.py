"""Habits of Ray Serve's documentation examples, checked without starting anything."""

from __future__ import annotations

import pytest

import swell
from swell.deployment import INGRESS_APP_ATTRIBUTE


def build_app() -> object:
    return object()


def test_ingress_without_a_class_makes_one_as_ray_does() -> None:
    cls = swell.ingress(build_app)()
    assert cls.__name__ == "ASGIIngressDeployment"
    assert getattr(cls, INGRESS_APP_ATTRIBUTE) is build_app
    assert cls("a", b=1).args == ("a",)  # type: ignore[attr-defined]
    deployment = swell.deployment(cls)
    assert deployment.name == "ASGIIngressDeployment"
    assert swell.ingress(build_app)() is not cls  # one class per call, never shared


def test_route_prefix_on_a_deployment_says_where_it_belongs() -> None:
    # Ray before 2.10 took route_prefix here (older examples still set it); now Ray refuses it.
    with pytest.raises(swell.ConfigError, match=r"serve\.run\(app, route_prefix=\.\.\.\)"):

        @swell.deployment(route_prefix="/")
        class Model:
            pass
