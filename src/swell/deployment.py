"""Deployments and the applications that ``.bind()`` builds from them."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from swell.config import DeploymentConfig, validate_deployment_options
from swell.exceptions import ConfigError

INGRESS_APP_ATTRIBUTE = "__swell_ingress_app__"


class Deployment:
    """A class or function plus the options it is served with. Made by ``@swell.deployment``."""

    def __init__(
        self,
        func_or_class: Callable[..., Any],
        config: DeploymentConfig,
    ) -> None:
        self._func_or_class = func_or_class
        self._config = config

    @property
    def name(self) -> str:
        return self._config.name or self._func_or_class.__name__

    @property
    def func_or_class(self) -> Callable[..., Any]:
        return self._func_or_class

    @property
    def config(self) -> DeploymentConfig:
        return self._config

    @property
    def ingress_app(self) -> Any:
        """The ASGI app (a FastAPI app) given to ``@swell.ingress``, if any."""
        return getattr(self._func_or_class, INGRESS_APP_ATTRIBUTE, None)

    @property
    def is_class(self) -> bool:
        return inspect.isclass(self._func_or_class)

    def options(self, **overrides: Any) -> Deployment:
        """A copy with some options changed; validated like the decorator's keywords."""
        merged = self._config.model_dump(exclude_unset=True)
        merged.update(overrides)
        where = f"options for deployment '{overrides.get('name', self.name)}'"
        return Deployment(self._func_or_class, validate_deployment_options(merged, where))

    def bind(self, *args: Any, **kwargs: Any) -> Application:
        """Fix the constructor arguments; returns an Application to run or compose."""
        if not self.is_class and (args or kwargs):
            raise ConfigError(
                f"Deployment '{self.name}' is a function and takes no constructor "
                "arguments; call .bind() with none."
            )
        return Application(BoundDeployment(self, args, kwargs))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"Deployment '{self.name}' cannot be called directly; use "
            f"{self.name}.bind(...) and swell.run(), or call it through a handle."
        )

    def __repr__(self) -> str:
        return f"Deployment(name={self.name!r})"


@dataclass(frozen=True)
class BoundDeployment:
    """One node of an application graph: a deployment and its constructor arguments."""

    deployment: Deployment
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)

    def children(self) -> Iterator[BoundDeployment]:
        for value in (*self.args, *self.kwargs.values()):
            if isinstance(value, Application):
                yield value.root


class Application:
    """A deployment graph whose root is the ingress. Returned by ``Deployment.bind()``."""

    def __init__(self, root: BoundDeployment) -> None:
        self._root = root

    @property
    def root(self) -> BoundDeployment:
        return self._root

    @property
    def ingress_name(self) -> str:
        return self._root.deployment.name

    def unique_names(self) -> dict[int, str]:
        """Each bound deployment's name in this application, by ``id()`` of its node.

        Two different ``.bind()``s that share a name are renamed as Ray Serve does: the first
        met from the ingress keeps it, later ones get ``_1``, ``_2``... (the ingress never
        changes name). One node reached twice (a shared child) is one deployment.
        """
        names: dict[int, str] = {}
        taken: set[str] = set()
        queue = [self._root]
        while queue:
            node = queue.pop(0)
            if id(node) in names:
                continue
            base = node.deployment.name
            name, suffix = base, 0
            while name in taken:
                suffix += 1
                name = f"{base}_{suffix}"
            names[id(node)] = name
            taken.add(name)
            queue.extend(node.children())
        return names

    def walk(self) -> list[BoundDeployment]:
        """Every bound deployment, dependencies first, under its unique name."""
        names = self.unique_names()
        seen: set[int] = set()
        order: list[BoundDeployment] = []

        def visit(node: BoundDeployment) -> None:
            if id(node) in seen:
                return
            seen.add(id(node))
            for child in node.children():
                visit(child)
            name = names[id(node)]
            if name != node.deployment.name:
                node = BoundDeployment(node.deployment.options(name=name), node.args, node.kwargs)
            order.append(node)

        visit(self._root)
        return order

    def __repr__(self) -> str:
        return f"Application(ingress={self.ingress_name!r})"
