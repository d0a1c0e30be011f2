"""The admin API's backend: what a running instance answers to GET, PUT and DELETE of
``/api/serve/applications/``, the routers' watch and scale-from-zero demand."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any, Protocol

from swell import _node_metrics
from swell._controller.controller import Controller
from swell._controller.deployer import ConfigDeployer
from swell._logging.reader import find_log_files, read_records
from swell.config import (
    ControllerOptions,
    HTTPOptions,
    ServeConfig,
    gRPCOptions,
    validate_model,
)
from swell.exceptions import ConfigError


class RunningInstance(Protocol):
    """The parts of a running instance the admin API reads."""

    controller: Controller | None
    deployer: ConfigDeployer | None
    ingress: Any
    fleet: Any
    http_options: HTTPOptions
    grpc_options: gRPCOptions
    controller_options: ControllerOptions
    admin_port: int | None

    @property
    def on_ray(self) -> bool: ...

    def request_stop(self) -> None: ...


class InstanceAdminBackend:
    """Implements the admin API's ``AdminBackend`` over one running instance."""

    def __init__(self, instance: RunningInstance) -> None:
        self._instance = instance

    def request_stop(self) -> None:
        self._instance.request_stop()

    def status_document(self) -> dict[str, Any]:
        controller, deployer = self._instance.controller, self._instance.deployer
        assert controller is not None and deployer is not None
        status = controller.status()
        deployer.overlay(status["applications"])
        status["proxies"] = self._proxies_document()
        status["http_options"] = self._instance.http_options.model_dump(mode="json")
        status["admin_port"] = self._instance.admin_port
        status["logs_dir"] = controller.logs_dir
        status["deployed_config"] = deployer.applied
        # Ray Serve's fields that KubeRay's client knows (it ignores the rest).
        status["deploy_mode"] = "MULTI_APP"
        status["target_capacity"] = deployer.target_capacity()
        return status

    def _proxies_document(self) -> dict[str, Any]:
        if self._instance.fleet is not None:
            proxies: dict[str, Any] = self._instance.fleet.proxy_statuses()
            return proxies
        ingress = self._instance.ingress
        assert ingress is not None
        return {socket.gethostname(): ingress.describe()}

    async def metrics_text(self) -> str:
        assert self._instance.controller is not None
        ingress = self._instance.ingress or self._instance.fleet
        return await _node_metrics.metrics_text(self._instance.controller, ingress)

    async def dashboard_document(self) -> dict[str, Any]:
        assert self._instance.controller is not None
        ingress = self._instance.ingress or self._instance.fleet
        return await _node_metrics.dashboard_document(
            self._instance.controller, ingress, self.status_document()
        )

    def note_demand(self, app_name: str, deployment: str) -> bool:
        assert self._instance.controller is not None
        return self._instance.controller.note_demand(app_name, deployment)

    def ingress_deployment(self, app_name: str) -> str | None:
        assert self._instance.controller is not None
        return self._instance.controller.ingress_deployment(app_name)

    def read_logs(
        self,
        app_name: str | None,
        deployment: str | None,
        cursor: dict[str, int] | None,
    ) -> dict[str, Any]:
        """New log records of the instance (of one app or deployment), merged by time."""
        assert self._instance.controller is not None
        directories = [Path(d) for d in self._instance.controller.log_directories()]
        files = find_log_files(directories, app_name, deployment)
        records, cursor = read_records(files, cursor, app_name)
        return {"records": [text for _, text in records], "cursor": cursor}

    async def watch_replica_set(
        self, app_name: str, deployment: str, known_version: int, wait_s: float
    ) -> dict[str, Any] | None:
        assert self._instance.controller is not None
        return await self._instance.controller.watch_replica_set(
            app_name, deployment, known_version, wait_s
        )

    def submit_config(self, document: Any) -> None:
        """A PUT of the whole config: its schema now, the rest in the background."""
        if not isinstance(document, dict):
            raise ConfigError("the config must be a JSON object (serveConfigV2's fields)")
        config: ServeConfig = validate_model(ServeConfig, document, "config")
        self._check_http_options(config.http_options)
        self._check_grpc_options(config)
        self._check_proxy_location(config)
        assert self._instance.deployer is not None
        self._instance.deployer.submit(config)

    def _check_proxy_location(self, config: ServeConfig) -> None:
        running = self._instance.controller_options.proxy_location
        if not self._instance.on_ray:
            return  # one machine, one HAProxy: nothing to place
        if "proxy_location" in config.model_fields_set and config.proxy_location != running:
            raise ConfigError(
                f"proxy_location={config.proxy_location!r} differs from the running instance's "
                f"{running!r}; it applies when swell starts: restart it to change it."
            )

    def _check_http_options(self, wanted: HTTPOptions) -> None:
        """HTTP options apply when swell starts; a PUT may repeat them, not change them."""
        running = self._instance.http_options
        for field in sorted(wanted.model_fields_set):
            if getattr(wanted, field) != getattr(running, field):
                raise ConfigError(
                    f"http_options.{field}={getattr(wanted, field)!r} differs from the running "
                    f"instance's {getattr(running, field)!r}; HTTP options apply when swell "
                    "starts: restart it to change them."
                )

    def _check_grpc_options(self, config: ServeConfig) -> None:
        """gRPC options apply when swell starts, like HTTP's; a PUT may only repeat them."""
        wanted = config.grpc_options
        running = self._instance.grpc_options
        for field in sorted(wanted.model_fields_set):
            if getattr(wanted, field) != getattr(running, field):
                raise ConfigError(
                    f"grpc_options.{field}={getattr(wanted, field)!r} differs from the running "
                    f"instance's {getattr(running, field)!r}; gRPC options apply when swell "
                    "starts: restart it to change them."
                )

    async def delete_all(self) -> None:
        assert self._instance.deployer is not None
        await self._instance.deployer.delete_all()
