"""From an application graph to what the controller runs: one DeploymentTarget per deployment.

Also decides the code version: what changes when replicas must be replaced rather than
updated in place.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import cloudpickle

from swell._controller.model import DeploymentTarget
from swell._import_path import load_application
from swell._spec import CallableRef, reference_to
from swell.config import (
    DeploymentConfig,
    DeploymentOverride,
    LoggingConfig,
    RunOptions,
    RuntimeEnv,
    ServeConfig,
    validate_deployment_options,
)
from swell.deployment import Application, Deployment
from swell.exceptions import ConfigError
from swell.handle import DeploymentHandle


def code_version(
    dep: Deployment,
    ref: CallableRef,
    init_args: bytes,
    config: DeploymentConfig,
    env: RuntimeEnv,
) -> str:
    """Changes when replicas must be replaced: code, arguments, environment, resources.

    Replica count, autoscaling, queue limits and user_config are left out: those are
    applied to live replicas in place.
    """
    digest = hashlib.sha256()
    digest.update(repr((ref.module, ref.attribute, ref.pickled)).encode())
    digest.update(init_args)
    digest.update(repr(sorted(config.ray_actor_options.items())).encode())
    digest.update(str(config.max_ongoing_requests).encode())
    digest.update(env.model_dump_json().encode())
    # A replica sets its logging up as it starts: a new logging_config needs new replicas.
    if config.logging_config is not None:
        digest.update(config.logging_config.model_dump_json().encode())
    try:
        source = inspect.getsourcefile(dep.func_or_class)
        if source is not None:
            with open(source, "rb") as code:
                digest.update(code.read())
    except (OSError, TypeError):
        pass  # built-in or generated code: the reference and pickle above stand for it
    return digest.hexdigest()[:12]


def _as_handle(value: Any, app_name: str, names: dict[int, str]) -> Any:
    if isinstance(value, Application):
        return DeploymentHandle(names.get(id(value.root), value.ingress_name), app_name)
    return value


def deployment_targets(
    app: Application,
    app_name: str,
    overrides: list[DeploymentOverride] | None = None,
    runtime_env: RuntimeEnv | None = None,
    logging_config: LoggingConfig | None = None,
) -> list[DeploymentTarget]:
    """What the controller needs per deployment, with a config file's overrides applied.

    ``logging_config`` (the application's, else the config file's) applies to deployments
    that set none themselves, as in Ray.
    """
    nodes = app.walk()
    names = app.unique_names()
    by_name = {o.name: o for o in overrides or []}
    unknown = sorted(set(by_name) - {node.deployment.name for node in nodes})
    if unknown:
        raise ConfigError(
            f"deployments {unknown} in the config are not in the application; it has "
            f"{sorted(node.deployment.name for node in nodes)}."
        )
    env = runtime_env or RuntimeEnv()
    targets = []
    for node in nodes:
        dep = node.deployment
        config = dep.config
        override = by_name.get(dep.name)
        if override is not None:
            merged = config.model_dump(exclude_unset=True)
            merged.update(override.model_dump(exclude_unset=True, exclude={"name"}))
            config = validate_deployment_options(merged, f"deployment '{dep.name}' in the config")
        if config.logging_config is None and logging_config is not None:
            config = config.model_copy(update={"logging_config": logging_config})
        ref = reference_to(dep.func_or_class, dep)
        # Bound deployments passed as arguments arrive in the replica as handles.
        args = tuple(_as_handle(value, app_name, names) for value in node.args)
        kwargs = {key: _as_handle(value, app_name, names) for key, value in node.kwargs.items()}
        try:
            init_args = cloudpickle.dumps((args, kwargs))
        except Exception as error:
            raise ConfigError(
                f"The arguments bound to deployment '{dep.name}' cannot be pickled: {error}"
            ) from error
        own_env = _deployment_runtime_env(dep.name, config)
        digest = code_version(dep, ref, init_args, config, env)
        targets.append(
            DeploymentTarget(
                name=dep.name,
                ref=ref,
                init_args=init_args,
                config=config,
                is_ingress=node is app.root,
                version=digest,
                env_vars={**env.env_vars, **own_env.env_vars},
                working_dir=own_env.working_dir or env.working_dir,
            )
        )
    return targets


def _deployment_runtime_env(name: str, config: Any) -> RuntimeEnv:
    """``ray_actor_options.runtime_env`` of one deployment: as in Ray, its ``env_vars`` are
    added to (and win over) the application's, and its ``working_dir`` replaces the app's."""
    raw = config.ray_actor_options.get("runtime_env")
    if not raw:
        return RuntimeEnv()
    try:
        return RuntimeEnv.model_validate(raw)
    except ValueError as error:
        raise ConfigError(
            f"deployment '{name}': ray_actor_options.runtime_env is not valid: {error}"
        ) from error


def prepare_config(config: ServeConfig) -> list[tuple[RunOptions, list[DeploymentTarget]]]:
    """Import and validate every application of a config; ConfigError on the first bad one."""
    prepared = []
    for app_config in config.applications:
        app = load_application(
            app_config.import_path, app_config.args, app_config.runtime_env.working_dir
        )
        targets = deployment_targets(
            app,
            app_config.name,
            app_config.deployments,
            app_config.runtime_env,
            app_config.logging_config or config.logging_config,
        )
        prepared.append(
            (RunOptions(name=app_config.name, route_prefix=app_config.route_prefix), targets)
        )
    return prepared
