"""Resolve ``module:attribute`` import paths, with errors that name what is missing."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

from swell.exceptions import ConfigError


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
