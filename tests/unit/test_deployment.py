"""Deployments, .options(), .bind() and the application graph."""

from __future__ import annotations

from typing import Any

import cloudpickle
import pytest
from fastapi import FastAPI

import swell
from swell import Application, ConfigError, Deployment
from swell.deployment import BoundDeployment


class Model:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs


def predict() -> str:
    return "ok"


def test_bare_decorator_on_class() -> None:
    dep = swell.deployment(Model)
    assert isinstance(dep, Deployment)
    assert dep.name == "Model"
    assert dep.func_or_class is Model
    assert dep.is_class
    assert dep.config.max_ongoing_requests == 5


def test_decorator_with_options_on_function() -> None:
    dep = swell.deployment(num_replicas=2)(predict)
    assert dep.name == "predict"
    assert dep.func_or_class is predict
    assert not dep.is_class
    assert dep.config.num_replicas == 2


def test_decorator_syntax() -> None:
    @swell.deployment
    class Plain:
        pass

    @swell.deployment(name="renamed")
    def handler() -> None:
        pass

    assert Plain.name == "Plain"
    assert handler.name == "renamed"


def test_decorating_a_deployment_applies_options() -> None:
    dep = swell.deployment(num_replicas=2)(swell.deployment(max_ongoing_requests=3)(Model))
    assert dep.config.num_replicas == 2
    assert dep.config.max_ongoing_requests == 3


def test_decorating_a_non_callable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="not int"):
        swell.deployment(5)  # type: ignore[call-overload]


def test_options_name() -> None:
    dep = swell.deployment(Model)
    renamed = dep.options(name="other")
    assert renamed.name == "other"
    assert renamed.func_or_class is Model
    assert dep.name == "Model"
    assert repr(renamed) == "Deployment(name='other')"


def test_options_bad_name() -> None:
    with pytest.raises(ConfigError, match="deployment 'a/b'"):
        swell.deployment(Model).options(name="a/b")


def test_bind_stores_args() -> None:
    app = swell.deployment(Model).bind(1, "two", three=3)
    assert isinstance(app, Application)
    assert app.root.args == (1, "two")
    assert app.root.kwargs == {"three": 3}
    assert app.ingress_name == "Model"
    assert repr(app) == "Application(ingress='Model')"


def test_bind_function_without_args() -> None:
    app = swell.deployment(predict).bind()
    assert app.root.args == ()
    assert app.root.kwargs == {}


@pytest.mark.parametrize(
    ("args", "kwargs"), [((1,), {}), ((), {"x": 1})], ids=["positional", "keyword"]
)
def test_bind_args_to_function_is_an_error(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="'predict' is a function"):
        swell.deployment(predict).bind(*args, **kwargs)


def test_calling_a_deployment_directly() -> None:
    dep = swell.deployment(Model)
    with pytest.raises(RuntimeError, match=r"Model\.bind\(\.\.\.\)"):
        dep()


def test_walk_single() -> None:
    app = swell.deployment(Model).bind()
    assert app.walk() == [app.root]


def test_walk_dependencies_first() -> None:
    first = swell.deployment(Model).options(name="first").bind()
    second = swell.deployment(Model).options(name="second").bind()
    app = swell.deployment(Model).options(name="ingress").bind(first, key=second)
    assert [node.deployment.name for node in app.walk()] == ["first", "second", "ingress"]
    assert list(app.root.children()) == [first.root, second.root]


def test_walk_shared_child_appears_once() -> None:
    shared = swell.deployment(Model).options(name="shared").bind()
    left = swell.deployment(Model).options(name="left").bind(shared)
    right = swell.deployment(Model).options(name="right").bind(shared)
    app = swell.deployment(Model).options(name="top").bind(left, right)
    assert [node.deployment.name for node in app.walk()] == ["shared", "left", "right", "top"]


def test_walk_renames_two_binds_of_one_deployment_as_ray_does() -> None:
    dep = swell.deployment(Model)
    first, second = dep.bind(1), dep.bind(2)
    app = dep.options(name="top").bind(first, second)
    assert [node.deployment.name for node in app.walk()] == ["Model", "Model_1", "top"]
    assert [node.args for node in app.walk()] == [(1,), (2,), (first, second)]
    names = app.unique_names()
    assert (names[id(first.root)], names[id(second.root)]) == ("Model", "Model_1")


def test_walk_child_named_like_the_ingress_is_renamed_not_the_ingress() -> None:
    dep = swell.deployment(Model)
    app = dep.bind(dep.bind())
    assert [node.deployment.name for node in app.walk()] == ["Model_1", "Model"]
    assert app.walk()[-1] is app.root


def test_handles_point_at_renamed_deployments() -> None:
    from swell._targets import deployment_targets

    dep = swell.deployment(Model)
    app = dep.options(name="top").bind(dep.bind(1), dep.bind(2))
    targets = deployment_targets(app, "default")
    assert [t.name for t in targets] == ["Model", "Model_1", "top"]
    args, _ = cloudpickle.loads(targets[-1].init_args)
    assert [handle.deployment_name for handle in args] == ["Model", "Model_1"]


def test_a_deployments_own_runtime_env_adds_to_the_applications_and_wins() -> None:
    from swell._targets import deployment_targets
    from swell.config import RuntimeEnv
    from swell.exceptions import ConfigError

    own = {"runtime_env": {"env_vars": {"B": "deployment", "C": "3"}, "working_dir": "/w"}}
    app = swell.deployment(Model).options(ray_actor_options=own).bind(1)
    app_env = RuntimeEnv(env_vars={"A": "1", "B": "application"}, working_dir="/app")
    (target,) = deployment_targets(app, "default", runtime_env=app_env)
    assert target.env_vars == {"A": "1", "B": "deployment", "C": "3"}
    assert target.working_dir == "/w"
    bad = swell.deployment(Model).options(ray_actor_options={"runtime_env": {"pip": ["x"]}})
    with pytest.raises(ConfigError, match=r"deployment 'Model': ray_actor_options.runtime_env"):
        deployment_targets(bad.bind(1), "default")


def test_bound_deployment_is_frozen() -> None:
    node = BoundDeployment(swell.deployment(Model), ())
    with pytest.raises(AttributeError):
        node.args = (1,)  # type: ignore[misc]


# @swell.ingress ----------------------------------------------------------------------------


def test_ingress_on_class() -> None:
    asgi_app = object()

    @swell.deployment
    @swell.ingress(asgi_app)
    class Api:
        pass

    assert Api.ingress_app is asgi_app
    assert Api.options(name="other").ingress_app is asgi_app


def test_ingress_on_deployment() -> None:
    fastapi_app = FastAPI()

    @swell.ingress(fastapi_app)
    @swell.deployment
    class Api:
        pass

    assert isinstance(Api, Deployment)
    assert Api.ingress_app is fastapi_app


def test_no_ingress_app() -> None:
    assert swell.deployment(Model).ingress_app is None
    assert swell.deployment(predict).ingress_app is None


def test_ingress_on_function_is_an_error() -> None:
    with pytest.raises(ConfigError, match="decorates a class"):
        swell.ingress(object())(predict)
    with pytest.raises(ConfigError, match="decorates a class"):
        swell.ingress(object())(swell.deployment(predict))
