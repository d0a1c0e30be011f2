"""The controller's replica lifecycle, driven through a fake engine, ingress and replica client.

These pin the state machine's failure paths: a failure at any step of a replica's bring-up,
a stop or delete while it starts, a user_config update while it starts. Each would once have
left a replica STARTING forever, re-published, orphaned or on a stale config.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from swell._controller.controller import Controller
from swell._controller.model import DeploymentTarget
from swell._engines.base import ReadyInfo, ReplicaStartupError
from swell._spec import CallableRef, ReplicaSpec
from swell.config import DeploymentConfig

DEADLINE_S = 10.0


class FakeRuntime:
    def __init__(self, spec: ReplicaSpec, index: int) -> None:
        self.spec = spec
        self.replica_id = spec.replica_id
        self.pid: int | None = 1000 + index
        self.ready_info: ReadyInfo | None = None
        self.ready: asyncio.Future[ReadyInfo] = asyncio.get_running_loop().create_future()
        self.exited = asyncio.Event()
        self.stopped = False

    def become_ready(self) -> None:
        ready = ReadyInfo("127.0.0.1", 9000, self.pid or 0, 9001, 9002)
        self.ready_info = ready
        self.ready.set_result(ready)

    def fail(self, detail: str) -> None:
        self.ready.set_exception(ReplicaStartupError(detail))

    async def wait_ready(self) -> ReadyInfo:
        return await asyncio.shield(self.ready)

    async def wait_exit(self) -> int:
        await self.exited.wait()
        return 0

    async def stop(self, timeout_s: float) -> None:
        self.stopped = True
        self.exited.set()

    def kill(self) -> None:
        self.stopped = True
        self.exited.set()


class FakeEngine:
    def __init__(self) -> None:
        self.runtimes: list[FakeRuntime] = []
        self.hold_start: asyncio.Event | None = None
        self.auto_ready = True

    async def start_replica(self, spec: ReplicaSpec) -> FakeRuntime:
        if self.hold_start is not None:
            await self.hold_start.wait()
        runtime = FakeRuntime(spec, len(self.runtimes))
        self.runtimes.append(runtime)
        if self.auto_ready:
            runtime.become_ready()
        return runtime

    async def shutdown(self) -> None:
        pass


class FakeIngress:
    def __init__(self) -> None:
        self.servers: dict[str, set[str]] = {}
        self.routes: dict[str, str] = {}
        self.queue_limits: dict[str, int] = {}
        self.fail_adds = 0
        self.hold_add: asyncio.Event | None = None

    async def set_route(
        self, app_name: str, route_prefix: str, max_queued_requests: int = -1
    ) -> None:
        self.routes[app_name] = route_prefix
        self.queue_limits[app_name] = max_queued_requests
        self.servers.setdefault(app_name, set())

    async def remove_route(self, app_name: str) -> None:
        self.routes.pop(app_name, None)
        self.servers.pop(app_name, None)

    async def add_server(
        self, app_name: str, server_name: str, address: str, maxconn: int, check_port: Any = None
    ) -> None:
        if self.hold_add is not None:
            await self.hold_add.wait()
        if self.fail_adds:
            self.fail_adds -= 1
            raise RuntimeError("no runtime socket")
        self.servers.setdefault(app_name, set()).add(server_name)

    async def drain_server(self, app_name: str, server_name: str) -> None:
        pass

    async def remove_server(self, app_name: str, server_name: str) -> None:
        self.servers.get(app_name, set()).discard(server_name)

    async def sessions(self, app_name: str) -> dict[str, int]:
        return {}


class FakeReplicaClient:
    def __init__(self) -> None:
        self.reconfigured: list[tuple[str, Any]] = []

    async def check_health(self, address: str, timeout_s: float) -> tuple[bool, str]:
        return True, "ok"

    async def reconfigure(
        self, address: str, user_config: Any, timeout_s: float
    ) -> tuple[bool, str]:
        self.reconfigured.append((address, user_config))
        return True, "ok"

    async def load(self, address: str) -> int | None:
        return 0

    async def aclose(self) -> None:
        pass


def target(version: str = "v1", **options: Any) -> DeploymentTarget:
    return DeploymentTarget(
        name="Model",
        ref=CallableRef(module="m", attribute="Model"),
        init_args=b"",
        config=DeploymentConfig(**options),
        is_ingress=True,
        version=version,
    )


async def until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


Scenario = Callable[[Controller, FakeEngine, FakeIngress, FakeReplicaClient], Awaitable[None]]


def run_scenario(scenario: Scenario) -> None:
    async def main() -> None:
        engine, ingress, client = FakeEngine(), FakeIngress(), FakeReplicaClient()
        controller = Controller(engine, ingress, [], replica_client=client)  # type: ignore[arg-type]
        controller.start()
        try:
            await asyncio.wait_for(scenario(controller, engine, ingress, client), 3 * DEADLINE_S)
        finally:
            await controller.shutdown()

    asyncio.run(main())


def replica_states(controller: Controller) -> dict[str, str]:
    app = controller.status()["applications"]["app"]
    return {r["replica_id"]: r["state"] for r in app["deployments"]["Model"]["replicas"]}


def test_a_failed_haproxy_add_stops_the_replica_and_retries() -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        ingress.fail_adds = 1
        await controller.deploy_app("app", "/", [target()])
        await until(lambda: len(ingress.servers.get("app", ())) == 1, "a replica to join")
        first, second = engine.runtimes[0], engine.runtimes[1]
        assert first.stopped, "the replica whose add failed must be stopped, not left STARTING"
        assert not second.stopped
        assert list(replica_states(controller).values()) == ["RUNNING"]

    run_scenario(scenario)


def test_a_replica_stopped_while_joining_haproxy_is_not_published() -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        ingress.hold_add = asyncio.Event()
        await controller.deploy_app("app", "/", [target(num_replicas=1)])
        await until(lambda: len(engine.runtimes) == 1, "the replica to start")
        await controller.deploy_app("app", "/", [target(num_replicas=0)])
        ingress.hold_add.set()
        await until(lambda: engine.runtimes[0].stopped, "the replica to be stopped")
        await until(lambda: not replica_states(controller), "the replica to be forgotten")
        assert ingress.servers["app"] == set()
        document = await controller.watch_replica_set("app", "Model", -1, 0.0)
        assert document is not None and document["replicas"] == {}

    run_scenario(scenario)


def test_a_replica_still_launching_does_not_survive_delete_app() -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        engine.hold_start = asyncio.Event()
        await controller.deploy_app("app", "/", [target()])
        await until(lambda: bool(replica_states(controller)), "a replica to be launching")
        deleting = asyncio.ensure_future(controller.delete_app("app"))
        await asyncio.sleep(0.05)
        engine.hold_start.set()
        await deleting
        assert controller.app_names() == []
        await until(lambda: all(r.stopped for r in engine.runtimes), "every replica to stop")
        assert "app" not in ingress.routes

    run_scenario(scenario)


def test_a_replica_starting_during_a_user_config_update_gets_the_new_config() -> None:
    async def scenario(
        controller: Controller,
        engine: FakeEngine,
        ingress: FakeIngress,
        client: FakeReplicaClient,
    ) -> None:
        engine.auto_ready = False
        await controller.deploy_app("app", "/", [target(user_config={"threshold": 1})])
        await until(lambda: len(engine.runtimes) == 1, "the replica to start")
        await controller.deploy_app("app", "/", [target(user_config={"threshold": 2})])
        engine.runtimes[0].become_ready()
        await until(lambda: "RUNNING" in replica_states(controller).values(), "it to run")
        assert client.reconfigured == [("127.0.0.1:9002", {"threshold": 2})]

    run_scenario(scenario)


def test_a_startup_failure_is_recorded_with_backoff_not_left_starting() -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        engine.auto_ready = False
        await controller.deploy_app("app", "/", [target()])
        await until(lambda: len(engine.runtimes) == 1, "the replica to start")
        engine.runtimes[0].fail("Traceback: constructor raised")
        await until(lambda: not replica_states(controller), "the failed replica to go")
        message = controller.status()["applications"]["app"]["message"]
        assert "constructor raised" in message
        assert engine.runtimes[0].stopped

    run_scenario(scenario)


def test_a_constructor_past_its_deadline_is_stopped() -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        engine.auto_ready = False
        await controller.deploy_app("app", "/", [target(startup_timeout_s=0.2)])
        await until(lambda: bool(engine.runtimes) and engine.runtimes[0].stopped, "a stop")
        message = controller.status()["applications"]["app"]["message"]
        assert "did not become ready within 0.2s (startup_timeout_s)" in message

    run_scenario(scenario)


@pytest.mark.parametrize("new_prefix", ["/moved", None])
def test_moving_a_route_keeps_the_replicas(new_prefix: str | None) -> None:
    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        await controller.deploy_app("app", "/old", [target(num_replicas=2)])
        await until(lambda: len(ingress.servers.get("app", ())) == 2, "both to join")
        before = set(replica_states(controller))
        await controller.deploy_app("app", new_prefix, [target(num_replicas=2)])
        assert set(replica_states(controller)) == before
        assert not any(r.stopped for r in engine.runtimes)
        assert ingress.routes.get("app") == new_prefix
        if new_prefix is not None:
            assert ingress.servers["app"] == before
        # And back onto a route: the running replicas join HAProxy again.
        await controller.deploy_app("app", "/back", [target(num_replicas=2)])
        assert ingress.servers["app"] == before

    run_scenario(scenario)


def test_the_ingress_queue_limit_follows_the_ingress_deployment() -> None:
    """HAProxy sheds load past the ingress deployment's max_queued_requests; an update that
    changes it changes the route's limit, a move keeps it, and no replica restarts."""

    async def scenario(
        controller: Controller, engine: FakeEngine, ingress: FakeIngress, _: FakeReplicaClient
    ) -> None:
        await controller.deploy_app("app", "/", [target(max_queued_requests=4)])
        assert ingress.queue_limits["app"] == 4
        await until(lambda: len(ingress.servers.get("app", ())) == 1, "the replica to join")
        await controller.deploy_app("app", "/", [target(max_queued_requests=2)])
        assert ingress.queue_limits["app"] == 2
        await controller.deploy_app("app", "/moved", [target(max_queued_requests=2)])
        assert (ingress.routes["app"], ingress.queue_limits["app"]) == ("/moved", 2)
        await controller.deploy_app("app", "/moved", [target()])
        assert ingress.queue_limits["app"] == -1
        assert not any(r.stopped for r in engine.runtimes)

    run_scenario(scenario)
