"""Resolve ``module:attribute`` import paths, with errors that name what is missing."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from swell.deployment import Application, Deployment
from swell.exceptions import ConfigError


def load_application(
    import_path: str, args: dict[str, Any] | None = None, working_dir: str | None = None
) -> Application:
    """Resolve an import path to an Application: the attribute itself, or a builder's result.

    A builder is a function that takes the config's ``args`` dict and returns an Application.
    """
    if working_dir and working_dir not in sys.path:
        sys.path.insert(0, working_dir)
    target = import_attribute(import_path)
    if isinstance(target, Deployment):
        raise ConfigError(
            f"{import_path!r} is a Deployment, not an Application; bind it first: "
            f"app = {target.name}.bind(...)"
        )
    if not isinstance(target, Application) and callable(target):
        target = target(args or {})
    elif args:
        raise ConfigError(
            f"args were given for {import_path!r}, but it is an Application, not a builder "
            "function that takes them; drop args or point import_path at a builder."
        )
    if not isinstance(target, Application):
        raise ConfigError(
            f"{import_path!r} is a {type(target).__name__}, not an Application "
            "(what Deployment.bind() returns) nor a builder function returning one."
        )
    return target


def import_attribute(import_path: str) -> Any:
    """Import ``module.sub:attr`` (or ``module.sub.attr``) with the current directory importable."""
    if ":" in import_path:
        module_name, _, attribute = import_path.partition(":")
    else:
        module_name, _, attribute = import_path.rpartition(".")
    if not module_name or not attribute:
        raise ConfigError(
            f"Import path {import_path!r} must look like 'module:attribute', "
            "for example 'examples.hello:app'."
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise ConfigError(
                f"Cannot import module {module_name!r} of import path {import_path!r}: "
                f"no module named {error.name!r} (searched from {os.getcwd()}). Check the "
                "spelling, or run from the directory that contains it."
            ) from None
        raise
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ConfigError(
                f"Module {module_name!r} has no attribute {attribute!r} "
                f"(import path {import_path!r})."
            )
        target = getattr(target, part)
    return target
