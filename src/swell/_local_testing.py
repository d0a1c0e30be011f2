"""``swell.run(app, _local_testing_mode=True)``: every deployment in this process, for tests.

No HAProxy, controller or replica process: each deployment's class is constructed once, here,
and handles to it call it directly. ``DeploymentHandle`` asks ``router_for`` before it looks
for replicas, so handles, responses, chaining and streaming are the same objects and code as
in a real run. Errors still arrive as in a real run (their own type and swell.RemoteError).
HTTP is not served: call the application through the handle ``run`` returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from swell._context import ReplicaContext, multiplexed_model_id, set_replica_context
from swell._dataplane import codec
from swell._replica.user_callable import UserCallable
from swell.deployment import Application

_apps: dict[str, dict[str, LocalRouter]] = {}
_ingress: dict[str, str] = {}
_lock = threading.Lock()


class LocalRouter:
    """Calls one in-process deployment with the interface of the data plane's Router."""

    def __init__(self, user: UserCallable, deployment: str) -> None:
        self._user = user
        self._deployment = deployment

    async def call(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float,
        model_id: str = "",
    ) -> Any:
        if model_id:
            multiplexed_model_id.set(model_id)  # this call's own task: no reset needed
        try:
            return await asyncio.wait_for(self._user.call(method, args, kwargs), timeout_s)
        except Exception as error:
            raise _as_remote(error, method, self._deployment) from None

    async def stream(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float,
        model_id: str = "",
    ) -> AsyncIterator[Any]:
        if model_id:
            multiplexed_model_id.set(model_id)
        items = self._user.stream(method, args, kwargs)
        while True:
            try:
                item = await asyncio.wait_for(anext(items), timeout_s)
            except StopAsyncIteration:
                return
            except Exception as error:
                raise _as_remote(error, method, self._deployment) from None
            yield item

    async def close(self) -> None:
        await self._user.shutdown()


def _as_remote(error: BaseException, method: str, deployment: str) -> BaseException:
    """The error as a caller of a real replica would get it."""
    try:
        codec.decode(codec.encode_error(error), method, f"{deployment} (local)")
    except BaseException as remote:
        return remote
    return error


def router_for(app_name: str, deployment: str) -> LocalRouter | None:
    """The in-process deployment a handle should call, if this app runs in local mode."""
    if not _apps:
        return None
    return _apps.get(app_name, {}).get(deployment)


def ingress_of(app_name: str) -> str | None:
    return _ingress.get(app_name)


def _loop() -> asyncio.AbstractEventLoop:
    """The loop sync handle calls run on: constructors and ``__del__`` run there too."""
    from swell.handle import _background_loop

    return _background_loop()


def run_local(app: Application, app_name: str) -> str:
    """Construct every deployment of ``app`` in this process, dependencies first; returns the
    ingress deployment's name. An app of the same name that runs locally is replaced."""
    from swell.handle import DeploymentHandle

    names = app.unique_names()
    routers: dict[str, LocalRouter] = {}

    def as_handle(value: Any) -> Any:
        if isinstance(value, Application):
            return DeploymentHandle(names[id(value.root)], app_name)
        return value

    async def construct_all() -> None:
        for node in app.walk():
            dep = node.deployment
            user = UserCallable(dep.func_or_class, dep.is_class, dep.config.max_ongoing_requests)
            set_replica_context(ReplicaContext(app_name, dep.name, f"{dep.name}-local", None))
            args = tuple(as_handle(v) for v in node.args)
            kwargs = {k: as_handle(v) for k, v in node.kwargs.items()}
            await user.construct(args, kwargs)
            if dep.config.user_config is not None:
                await user.reconfigure(dep.config.user_config)
            routers[dep.name] = LocalRouter(user, dep.name)
            with _lock:
                _apps.setdefault(app_name, {})[dep.name] = routers[dep.name]

    delete_local(app_name)
    asyncio.run_coroutine_threadsafe(construct_all(), _loop()).result()
    _ingress[app_name] = app.ingress_name
    return app.ingress_name


def delete_local(app_name: str) -> bool:
    """Drop a local app, running its deployments' ``__del__``; whether there was one."""
    with _lock:
        routers = _apps.pop(app_name, None)
        _ingress.pop(app_name, None)
    if routers is None:
        return False

    async def close_all() -> None:
        for router in routers.values():
            await router.close()

    asyncio.run_coroutine_threadsafe(close_all(), _loop()).result()
    return True


def shutdown_local() -> None:
    for app_name in list(_apps):
        delete_local(app_name)
