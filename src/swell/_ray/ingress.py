"""The controller's ingress on a Ray cluster: one HAProxy actor per node, driven as one.

``ProxyFleet`` implements the controller's ``IngressManager``: it keeps the whole ingress state
(routes, servers, drains) and fans every change out to every node's proxy actor, so any node's
HAProxy routes to every ingress replica in the cluster. A node that appears gets a proxy that
starts with the whole current state; a proxy whose actor or node dies is dropped, and started
again if its node is still alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, replace
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from swell._ingress.haproxy_config import BackendEntry, ServerEntry
from swell._metrics.core import merge_texts
from swell._ray.cluster import NAMESPACE, NodeInfo, alive_nodes, kill_named_actors
from swell._ray.proxy import HAProxyManager
from swell.config import HTTPOptions, ProxyLocation
from swell.exceptions import HAProxyError

logger = logging.getLogger("swell.ray.ingress")

# How often the node list is read to find new and dead nodes (Ray offers no public event).
NODE_WATCH_S = 1.0
_CALL_DEADLINE_S = 30.0
_PROXY_START_DEADLINE_S = 60.0
_PROXY_STOP_DEADLINE_S = 15.0

_ProxyActor = ray.remote(HAProxyManager)


PROXY_PREFIX = "SWELL_PROXY-"


def proxy_actor_name(node_id: str) -> str:
    return f"{PROXY_PREFIX}{node_id}"


def _future(ref: Any) -> asyncio.Future[Any]:
    return asyncio.wrap_future(ref.future())


@dataclass
class _Proxy:
    node: NodeInfo
    actor: Any
    info: dict[str, Any]
    watch: asyncio.Task[None] | None = None


class ProxyFleet:
    """Every node's HAProxy, as one ingress manager."""

    def __init__(
        self,
        options: HTTPOptions,
        wake_address: str,
        location: ProxyLocation = "EveryNode",
        replica_ca: str | None = None,
    ) -> None:
        self._options = options
        self._replica_ca = replica_ca
        self._wake_address = wake_address
        self._location = location
        self._backends: dict[str, BackendEntry] = {}
        self._proxies: dict[str, _Proxy] = {}
        self._starting: dict[str, asyncio.Task[None]] = {}
        self._errors: dict[str, str] = {}  # node id -> why its proxy did not start
        self._lock = asyncio.Lock()
        self._watch_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    # Lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start a proxy on every node that should have one; return once they all serve."""
        await self._sync_nodes()
        starting = list(self._starting.values())
        if starting:
            _, pending = await asyncio.wait(starting, timeout=_PROXY_START_DEADLINE_S)
            if pending:
                raise HAProxyError(
                    f"{len(pending)} node proxies did not start within {_PROXY_START_DEADLINE_S}s"
                )
        wanted = {node.node_id for node in await self._wanted_nodes()}
        missing = wanted - set(self._proxies)
        if missing:
            reasons = "\n".join(f"  node {n}: {self._errors.get(n, 'unknown')}" for n in missing)
            raise HAProxyError(f"HAProxy did not start on every node:\n{reasons}")
        self._watch_task = asyncio.get_running_loop().create_task(
            self._watch_nodes(), name="swell-ray-node-watch"
        )

    async def adopt(self, backends: dict[str, BackendEntry]) -> int:
        """Take over the proxies a previous controller started, which serve ``backends`` (its
        checkpoint); call before ``start``, which starts the missing ones. Returns how many."""
        self._backends = dict(backends)
        adopted = 0
        for node in await self._wanted_nodes():
            try:
                actor = ray.get_actor(proxy_actor_name(node.node_id), namespace=NAMESPACE)
                info = await asyncio.wait_for(
                    _future(actor.describe.remote()), _PROXY_START_DEADLINE_S
                )
            except Exception as error:  # gone, or never started
                logger.info("no proxy to adopt on node %s: %s", node.node_id, error)
                continue
            proxy = _Proxy(node, actor, info)
            self._proxies[node.node_id] = proxy
            proxy.watch = asyncio.get_running_loop().create_task(
                self._watch_proxy(proxy), name=f"swell-ray-proxy-watch-{node.node_id[:8]}"
            )
            adopted += 1
        return adopted

    def kill_strays(self) -> int:
        """Kill proxy actors this fleet does not drive (a controller that ended without
        stopping them left them): their names would block this fleet's. Returns how many."""
        keep = {proxy_actor_name(node_id) for node_id in self._proxies}
        return kill_named_actors(PROXY_PREFIX, keep)

    @property
    def backends(self) -> dict[str, BackendEntry]:
        """The whole ingress state, as every proxy holds it (checkpointed)."""
        return dict(self._backends)

    async def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        for task in self._starting.values():
            task.cancel()
        await asyncio.gather(*self._starting.values(), return_exceptions=True)
        proxies = list(self._proxies.values())
        self._proxies.clear()
        await asyncio.gather(*(self._stop_proxy(p) for p in proxies), return_exceptions=True)

    async def _stop_proxy(self, proxy: _Proxy) -> None:
        if proxy.watch is not None:
            proxy.watch.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(_future(proxy.actor.stop.remote()), _PROXY_STOP_DEADLINE_S)
        with contextlib.suppress(Exception):
            ray.kill(proxy.actor, no_restart=True)

    # Nodes --------------------------------------------------------------------------------

    async def _wanted_nodes(self) -> list[NodeInfo]:
        if self._location == "Disabled":
            return []
        nodes = await asyncio.get_running_loop().run_in_executor(None, alive_nodes)
        if self._location == "HeadOnly":
            return [node for node in nodes if node.is_head]
        return nodes

    async def _watch_nodes(self) -> None:
        while True:
            try:
                await self._sync_nodes()
                await self._refresh_statuses()
            except Exception:
                logger.exception("reading the cluster's nodes failed")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), NODE_WATCH_S)

    async def _sync_nodes(self) -> None:
        wanted = {node.node_id: node for node in await self._wanted_nodes()}
        for node_id in [n for n in self._proxies if n not in wanted]:
            logger.warning("node %s is gone: dropping its proxy", node_id)
            self._drop(node_id)
        for node_id, node in wanted.items():
            if node_id not in self._proxies and node_id not in self._starting:
                self._starting[node_id] = asyncio.get_running_loop().create_task(
                    self._add_proxy(node), name=f"swell-ray-proxy-{node_id[:8]}"
                )

    async def _refresh_statuses(self) -> None:
        """Each proxy's real state for the status page (a HAProxy restarting, say)."""
        proxies = list(self._proxies.values())
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(_future(p.actor.describe.remote()), NODE_WATCH_S * 5)
                for p in proxies
            ),
            return_exceptions=True,
        )
        for proxy, answer in zip(proxies, answers, strict=True):
            if isinstance(answer, dict):
                proxy.info = answer
            else:
                proxy.info = {**proxy.info, "status": "UNREACHABLE", "last_error": str(answer)}

    def _drop(self, node_id: str) -> None:
        proxy = self._proxies.pop(node_id, None)
        if proxy is not None:
            if proxy.watch is not None and proxy.watch is not asyncio.current_task():
                proxy.watch.cancel()
            with contextlib.suppress(Exception):
                ray.kill(proxy.actor, no_restart=True)
            self._changed.set()

    def _port_for(self, node: NodeInfo) -> int:
        return node.http_port if node.http_port is not None else self._options.port

    async def _add_proxy(self, node: NodeInfo) -> None:
        """Create the node's proxy actor; start its HAProxy with the whole current state."""
        name = proxy_actor_name(node.node_id)
        actor: Any = None
        try:
            options = self._options.model_copy(update={"port": self._port_for(node)})
            actor = _ProxyActor.options(
                name=name,
                namespace=NAMESPACE,
                num_cpus=0,
                lifetime="detached",  # outlives a controller actor; its successor adopts it
                max_restarts=0,
                max_concurrency=64,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
            ).remote(options, self._wake_address, self._replica_ca)
            # Wait for the actor's process outside the lock: changes keep flowing meanwhile.
            await asyncio.wait_for(_future(actor.describe.remote()), _PROXY_START_DEADLINE_S)
            async with self._lock:  # no change lands between the snapshot and the start
                info = await asyncio.wait_for(
                    _future(actor.start.remote(dict(self._backends))), _PROXY_START_DEADLINE_S
                )
                proxy = _Proxy(node, actor, info)
                self._proxies[node.node_id] = proxy
            proxy.watch = asyncio.get_running_loop().create_task(
                self._watch_proxy(proxy), name=f"swell-ray-proxy-watch-{node.node_id[:8]}"
            )
            logger.info("HAProxy serves on node %s (%s:%s)", node.node_id, node.ip, options.port)
        except Exception as error:
            self._errors[node.node_id] = str(error)
            logger.error("could not start HAProxy on node %s (%s): %s", node.node_id, name, error)
            if actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(actor, no_restart=True)
        finally:
            self._starting.pop(node.node_id, None)

    async def _watch_proxy(self, proxy: _Proxy) -> None:
        """Drop the proxy as soon as its actor dies (the node watch then replaces it)."""
        with contextlib.suppress(Exception):
            await _future(proxy.actor.wait_stopped.remote())
        if self._proxies.get(proxy.node.node_id) is proxy:
            logger.warning("the proxy on node %s died", proxy.node.node_id)
            self._drop(proxy.node.node_id)

    # Fan-out ------------------------------------------------------------------------------

    async def _fan_out(self, method: str, *args: Any) -> list[Any]:
        """Call ``method`` on every proxy; a dead one is dropped, any other error is raised
        once every proxy has answered."""
        proxies = list(self._proxies.values())
        results = await asyncio.gather(
            *(
                asyncio.wait_for(_future(getattr(p.actor, method).remote(*args)), _CALL_DEADLINE_S)
                for p in proxies
            ),
            return_exceptions=True,
        )
        answers = []
        failure: BaseException | None = None
        for proxy, result in zip(proxies, results, strict=True):
            if isinstance(result, RayActorError):
                self._drop(proxy.node.node_id)
            elif isinstance(result, BaseException):
                failure = failure or result
            else:
                answers.append(result)
        if failure is not None:
            raise failure
        return answers

    async def set_route(
        self, app_name: str, route_prefix: str, max_queued_requests: int = -1
    ) -> None:
        async with self._lock:
            existing = self._backends.get(app_name)
            servers = existing.servers if existing else ()
            self._backends[app_name] = BackendEntry(
                app_name, route_prefix, servers, max_queued_requests
            )
            await self._fan_out("set_route", app_name, route_prefix, max_queued_requests)

    async def remove_route(self, app_name: str) -> None:
        async with self._lock:
            self._backends.pop(app_name, None)
            await self._fan_out("remove_route", app_name)

    async def add_server(
        self,
        app_name: str,
        server_name: str,
        address: str,
        maxconn: int,
        check_port: int | None = None,
        grpc_port: int | None = None,  # gRPC ingress is local-engine only for now: unused
    ) -> None:
        async with self._lock:
            backend = self._backends.get(app_name)
            if backend is None:
                return
            server = ServerEntry(server_name, address, maxconn, check_port=check_port)
            self._backends[app_name] = replace(backend, servers=(*backend.servers, server))
            await self._fan_out("add_server", app_name, server_name, address, maxconn, check_port)

    async def drain_server(self, app_name: str, server_name: str) -> None:
        async with self._lock:
            backend = self._backends.get(app_name)
            if backend is None:
                return
            servers = tuple(
                replace(s, draining=True) if s.name == server_name else s for s in backend.servers
            )
            self._backends[app_name] = replace(backend, servers=servers)
            await self._fan_out("drain_server", app_name, server_name)

    async def remove_server(self, app_name: str, server_name: str) -> None:
        async with self._lock:
            backend = self._backends.get(app_name)
            if backend is None:
                return
            servers = tuple(s for s in backend.servers if s.name != server_name)
            self._backends[app_name] = replace(backend, servers=servers)
            await self._fan_out("remove_server", app_name, server_name)

    async def sessions(self, app_name: str) -> dict[str, int]:
        """Each server's sessions summed over every node's HAProxy (a drain waits for all)."""
        total: dict[str, int] = {}
        for answer in await self._fan_out("sessions", app_name):
            for name, count in answer.items():
                total[name] = total.get(name, 0) + count
        return total

    async def haproxy_metrics(self, timeout_s: float) -> str | None:
        """Every node's HAProxy exporter text as one exposition, each sample tagged with its
        ``node_id`` (Ray's); None if no proxy answered in time."""
        proxies = list(self._proxies.values())
        answers = await asyncio.gather(
            *(
                asyncio.wait_for(_future(p.actor.haproxy_metrics.remote(timeout_s)), timeout_s)
                for p in proxies
            ),
            return_exceptions=True,
        )
        texts = {
            proxy.node.node_id: answer
            for proxy, answer in zip(proxies, answers, strict=True)
            if isinstance(answer, str)
        }
        return merge_texts(texts, "node_id") if texts else None

    # Status -------------------------------------------------------------------------------

    def proxy_statuses(self) -> dict[str, dict[str, Any]]:
        """One entry per node proxy, keyed by node id (the status document's ``proxies``)."""
        return {node_id: dict(proxy.info) for node_id, proxy in self._proxies.items()}
