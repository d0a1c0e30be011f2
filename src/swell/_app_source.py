"""Where ``swell run`` and ``swell build`` find an application: Ray's ``--app-dir`` and the
runtime_env flags (``--runtime-env``, ``--runtime-env-json``, ``--working-dir``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from swell.config import RuntimeEnv, ServeConfig, validate_model
from swell.exceptions import ConfigError


def use_app_dir(app_dir: str) -> None:
    """Make modules in ``app_dir`` importable here and, through the sys.path swell hands
    them, in every replica started from this process."""
    directory = Path(app_dir).expanduser().resolve()
    if not directory.is_dir():
        raise ConfigError(f"--app-dir {app_dir}: no such directory")
    if str(directory) not in sys.path:
        sys.path.insert(0, str(directory))


def runtime_env_from(
    runtime_env_file: str | None, runtime_env_json: str | None, working_dir: str | None
) -> dict[str, Any] | None:
    """The runtime_env the flags describe (None when none was given), validated as an
    application's; ``--working-dir`` overrides the working_dir of the other two."""
    if runtime_env_file is not None and runtime_env_json is not None:
        raise ConfigError("give --runtime-env or --runtime-env-json, not both")
    runtime_env: dict[str, Any] | None = None
    if runtime_env_file is not None:
        try:
            loaded = yaml.safe_load(Path(runtime_env_file).read_text())
        except OSError as error:
            raise ConfigError(f"--runtime-env {runtime_env_file}: {error.strerror}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"--runtime-env {runtime_env_file} is not YAML: {error}") from None
        runtime_env = _mapping(loaded, f"--runtime-env {runtime_env_file}")
    elif runtime_env_json is not None:
        try:
            loaded = json.loads(runtime_env_json)
        except ValueError as error:
            raise ConfigError(f"--runtime-env-json is not JSON: {error}") from None
        runtime_env = _mapping(loaded, "--runtime-env-json")
    if working_dir is not None:
        directory = Path(working_dir).expanduser().resolve()
        if not directory.is_dir():
            raise ConfigError(
                f"--working-dir {working_dir}: no such directory (swell takes a "
                "local directory, not a URI)"
            )
        runtime_env = {**(runtime_env or {}), "working_dir": str(directory)}
    if runtime_env is not None:
        validate_model(RuntimeEnv, runtime_env, "runtime_env from the command line")
    return runtime_env


def with_default_runtime_env(
    document: dict[str, Any], runtime_env: dict[str, Any] | None
) -> dict[str, Any]:
    """A config document in which every application that names no runtime_env of its own
    takes the command line's (Ray's flags set the default for deployments)."""
    if runtime_env is None:
        return document
    applications = [
        app if "runtime_env" in app else {**app, "runtime_env": runtime_env}
        for app in document.get("applications") or []
    ]
    return {**document, "applications": applications}


def apply_default_runtime_env(
    config: ServeConfig, runtime_env: dict[str, Any] | None
) -> ServeConfig:
    """``with_default_runtime_env`` for a config already validated."""
    if runtime_env is None:
        return config
    default = validate_model(RuntimeEnv, runtime_env, "runtime_env from the command line")
    applications = [
        app
        if "runtime_env" in app.model_fields_set
        else app.model_copy(update={"runtime_env": default})
        for app in config.applications
    ]
    return config.model_copy(update={"applications": applications})


def _mapping(value: Any, source: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(
            f"{source} must be a mapping (env_vars, working_dir), not {type(value).__name__}"
        )
    return value
