"""Config files: read one into the schema, or write one from an application (``swell build``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from swell._import_path import load_application
from swell.config import ServeConfig, validate_model
from swell.exceptions import ConfigError


def load_config_file(path: str | Path) -> ServeConfig:
    """Parse and validate a YAML config file; every error names the file and the field."""
    source = Path(path)
    try:
        data = yaml.safe_load(source.read_text())
    except OSError as error:
        raise ConfigError(f"Cannot read config file {str(source)!r}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"Config file {str(source)!r} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"Config file {str(source)!r} must hold a mapping with 'applications', not "
            f"{type(data).__name__}."
        )
    config: ServeConfig = validate_model(ServeConfig, data, f"config file {str(source)!r}")
    return config


def build_config(import_paths: list[str]) -> dict[str, Any]:
    """A config document serving these applications, listing each deployment's options."""
    applications = []
    for index, import_path in enumerate(import_paths):
        app = load_application(import_path)
        deployments = []
        for node in app.walk():
            options = node.deployment.config.model_dump(mode="json", exclude_unset=True)
            options.pop("name", None)
            deployments.append({"name": node.deployment.name, **options})
        applications.append(
            {
                "name": "default" if len(import_paths) == 1 else f"app{index + 1}",
                "route_prefix": "/" if index == 0 else f"/app{index + 1}",
                "import_path": import_path,
                "runtime_env": {},
                "deployments": deployments,
            }
        )
    document = {
        "proxy_location": "EveryNode",
        "http_options": {"host": "127.0.0.1", "port": 8000},
        "applications": applications,
    }
    # Round-trip through the schema: what build writes, run must accept.
    validate_model(ServeConfig, document, "the built config")
    return document
