"""Choosing a replica for each handle call: power of two choices, backpressure, retries.

One router per (event loop, deployment) in every calling process. Its replica set is pushed by
the controller over a long-poll watch; if the controller goes away the last known set keeps
serving. Calls go straight to the chosen replica over one multiplexed TCP connection per
replica (swell's framed protocol, ``wire.py``), opened with a mutual handshake.

Every call has a deadline (``timeout_s``): placing it, waiting for its admission and for its
answer all end there, and a call that runs out of time is cancelled in the callee. A
replica that is unreachable, fails the handshake or is draining is avoided for a while; a
replica that is busy is retried after the others.

A call for a model (``multiplexed_model_id``) goes to a replica that reports holding it
(``multiplex_choice.py``); calls without one never look at models.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from swell._cluster_tls import client_context
from swell._dataplane import codec
from swell._dataplane.client import (
    Call,
    CallExpired,
    Connection,
    ConnectionLost,
    Deadlines,
    StreamCall,
)
from swell._dataplane.handshake import HandshakeError
from swell._dataplane.multiplex_choice import choose_for_model, parse_models
from swell._dataplane.wire import STREAM_WINDOW, Kind
from swell._protocol import CLUSTER_TOKEN_HEADER, DEMAND_PREFIX, REPLICA_SETS_PREFIX
from swell.context import call_metadata
from swell.exceptions import BackPressureError, ReplicaUnavailableError, RequestTimeoutError

logger = logging.getLogger(__name__)

_WATCH_TIMEOUT_S = 30.0
_WATCH_RETRY_MAX_S = 5.0
_REPORT_FRESH_S = 2.0
_UNREACHABLE_PENALTY_S = 5.0
_RETRY_WAIT_MAX_S = 0.5
NO_REPLICA_DEADLINE_S = 120.0
_DEMAND_EVERY_S = 1.0
# How long a call for a model waits to hear which models the replicas it has not talked to
# yet hold (once per replica): a replica that says nothing by then counts as holding none.
_LEARN_MODELS_S = 1.0


@dataclass(frozen=True)
class ClusterContext:
    """How this process reaches the controller and proves membership to replicas."""

    controller_url: str
    token: str
    # The cluster CA when replicas' data plane uses TLS (--tls-cert); None: plain TCP.
    tls_ca: str | None = None

    def tls_context(self) -> ssl.SSLContext | None:
        return None if self.tls_ca is None else client_context(self.tls_ca)

    def http_verify(self) -> ssl.SSLContext | bool:
        """httpx's ``verify`` for ``controller_url`` (https on a Ray cluster with TLS)."""
        return self.tls_context() or True


@dataclass
class _ReplicaView:
    address: str
    in_flight: int = 0
    reported_load: int = 0
    reported_at: float = 0.0
    unreachable_until: float = 0.0
    # The models the replica holds (its MODELS reports), plus those just sent its way; None
    # until it has said.
    models: frozenset[str] | None = None


class _Rejected(Exception):
    """The replica turned the call away before running it: safe to try another.

    ``avoid``: the replica is unreachable or draining, so skip it for a while (not just busy).
    """

    def __init__(self, avoid: bool) -> None:
        super().__init__()
        self.avoid = avoid


class Router:
    """Routes one deployment's calls from one event loop."""

    def __init__(self, app_name: str, deployment: str, cluster: ClusterContext) -> None:
        self._app = app_name
        self._deployment = deployment
        self._cluster = cluster
        self._replicas: dict[str, _ReplicaView] = {}
        self._version = -1
        self._max_ongoing = 1_000_000
        self._max_queued = -1
        self._waiting = 0
        self._changed = asyncio.Event()
        self._connections: dict[str, Connection] = {}
        self._opening: dict[str, asyncio.Task[Connection]] = {}
        self._watch_task: asyncio.Task[None] | None = None
        self._demand_reported_at = -_DEMAND_EVERY_S
        self._background: set[asyncio.Task[None]] = set()
        self._deadlines = Deadlines()
        self._models_heard = asyncio.Event()
        # Why the last replica that failed the handshake did (a wrong CA, a wrong token): a
        # call that found no replica says it.
        self._refusal: str | None = None

    @property
    def waiting(self) -> int:
        """Calls waiting for a replica with room (the metrics' queued calls)."""
        return self._waiting

    # The replica set ---------------------------------------------------------------------

    def _ensure_watching(self) -> None:
        if self._watch_task is None or self._watch_task.done():
            self._watch_task = asyncio.get_running_loop().create_task(
                self._watch(), name=f"swell-router-watch-{self._app}-{self._deployment}"
            )

    async def _watch(self) -> None:
        url = f"{self._cluster.controller_url}{REPLICA_SETS_PREFIX}{self._app}/{self._deployment}"
        delay = 0.1
        headers = {CLUSTER_TOKEN_HEADER: self._cluster.token}
        async with httpx.AsyncClient(
            timeout=_WATCH_TIMEOUT_S + 10, headers=headers, verify=self._cluster.http_verify()
        ) as client:
            while True:
                try:
                    response = await client.get(
                        url, params={"known_version": self._version, "wait_s": _WATCH_TIMEOUT_S}
                    )
                    if response.status_code == 200:
                        self._apply(response.json())
                        delay = 0.1
                        continue
                except httpx.HTTPError:
                    pass  # the controller may be restarting: keep the last known set
                await asyncio.sleep(delay)
                delay = min(delay * 2, _WATCH_RETRY_MAX_S)

    def _apply(self, replica_set: dict[str, Any]) -> None:
        self._version = int(replica_set["version"])
        self._max_ongoing = int(replica_set["max_ongoing_requests"])
        self._max_queued = int(replica_set["max_queued_requests"])
        addresses: dict[str, str] = replica_set["replicas"]
        for replica_id in list(self._replicas):
            if replica_id not in addresses:
                del self._replicas[replica_id]
                # Calls in flight keep their own reference; new calls never pick it again.
                self._connections.pop(replica_id, None)
        for replica_id, address in addresses.items():
            if replica_id not in self._replicas:
                self._replicas[replica_id] = _ReplicaView(address)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _connection(self, replica_id: str, address: str) -> Connection:
        """The shared connection to a replica, opened (and authenticated) on first use."""
        opening = self._opening.get(replica_id)
        if opening is None:
            on_models = functools.partial(self._on_models, replica_id)
            opening = asyncio.get_running_loop().create_task(
                Connection.open(
                    address,
                    self._cluster.token,
                    replica_id,
                    on_models=on_models,
                    tls=self._cluster.tls_context(),
                ),
                name=f"swell-connect-{replica_id}",
            )
            # Read even when every waiter ran out of time first: no "never retrieved" noise.
            opening.add_done_callback(_retrieve)
            self._opening[replica_id] = opening
        try:
            connection = await asyncio.shield(opening)
        finally:
            if opening.done():
                self._opening.pop(replica_id, None)
        self._connections[replica_id] = connection
        return connection

    def _on_models(self, replica_id: str, payload: bytes) -> None:
        view = self._replicas.get(replica_id)
        models = parse_models(payload)
        if view is not None and models is not None:
            view.models = models
            self._models_heard.set()

    async def _learn_models(self, deadline: float) -> None:
        """Before a call for a model: hear which models each replica holds (once per replica).

        Connecting is enough: a replica that multiplexes sends its models first thing.
        """
        loop = asyncio.get_running_loop()
        now = time.monotonic()
        unknown = {
            replica_id: view.address
            for replica_id, view in self._replicas.items()
            if view.models is None and view.unreachable_until <= now
        }
        if not unknown:
            return
        until = min(deadline, loop.time() + _LEARN_MODELS_S)

        async def connect(replica_id: str, address: str) -> None:
            # An unreachable replica is found out (and avoided) by the call itself.
            with contextlib.suppress(HandshakeError, OSError, TimeoutError):
                async with asyncio.timeout_at(until):
                    await self._connection(replica_id, address)

        await asyncio.gather(*(connect(r, a) for r, a in unknown.items()))

        def still_unknown() -> list[_ReplicaView]:
            views = (self._replicas.get(replica_id) for replica_id in unknown)
            return [view for view in views if view is not None and view.models is None]

        while still_unknown() and loop.time() < until:
            self._models_heard.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(until):
                    await self._models_heard.wait()
        for view in still_unknown():
            view.models = frozenset()

    async def close(self) -> None:
        """Stop watching and close the connections (swell is shutting down)."""
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.close()
        self._deadlines.close()

    # Choosing ----------------------------------------------------------------------------

    def _score(self, view: _ReplicaView, now: float) -> int:
        reported = view.reported_load if now - view.reported_at < _REPORT_FRESH_S else 0
        return max(view.in_flight, reported)

    def _choose(self, exclude: set[str] | None, model_id: str = "") -> str | None:
        now = time.monotonic()
        max_ongoing = self._max_ongoing
        first: str | None = None
        candidates: list[str] | None = None
        for replica_id, view in self._replicas.items():
            if (
                view.unreachable_until <= now
                and view.in_flight < max_ongoing
                and (exclude is None or replica_id not in exclude)
            ):
                if first is None:
                    first = replica_id
                elif candidates is None:
                    candidates = [first, replica_id]
                else:
                    candidates.append(replica_id)
        if model_id and first is not None:
            pool = candidates if candidates is not None else [first]
            return choose_for_model(pool, self._replicas, model_id, self._score, now)
        if candidates is None:
            return first  # none, or only one, has room
        if len(candidates) > 2:
            a, b = random.sample(candidates, 2)
        elif random.getrandbits(1):
            a, b = candidates
        else:
            b, a = candidates
        views = self._replicas
        return a if self._score(views[a], now) <= self._score(views[b], now) else b

    async def _assign(
        self, kind: Kind, payload: bytes, deadline: float, timeout_s: float, model_id: str = ""
    ) -> tuple[str, Call]:
        """Find a replica that accepts the call; wait (keeping our place) while all are busy.

        Ends at ``deadline`` (loop time) if none has accepted by then: RequestTimeoutError
        between attempts, CallExpired during one.
        """
        self._ensure_watching()
        if model_id:
            await self._learn_models(deadline)
        replica_id = self._choose(None, model_id) if self._waiting == 0 else None
        if replica_id is not None:
            # Nobody is waiting and a replica has room: no queueing, no queue limit.
            try:
                return replica_id, await self._start_call(replica_id, kind, payload, deadline)
            except _Rejected as rejection:
                self._note_rejection(replica_id, rejection)
        if self._max_queued >= 0 and self._waiting >= self._max_queued:
            raise BackPressureError(
                f"{self._waiting} requests to deployment '{self._deployment}' are already "
                f"waiting (max_queued_requests={self._max_queued}); try again later."
            )
        self._waiting += 1
        try:
            return await self._place(kind, payload, deadline, timeout_s, model_id)
        finally:
            self._waiting -= 1

    async def _place(
        self, kind: Kind, payload: bytes, deadline: float, timeout_s: float, model_id: str
    ) -> tuple[str, Call]:
        """Try replicas in turn, backing off while none has room, until ``deadline``."""
        loop = asyncio.get_running_loop()
        no_replica_deadline = loop.time() + NO_REPLICA_DEADLINE_S
        tried: set[str] = set()
        wait_s = 0.005
        while True:
            if model_id:
                await self._learn_models(deadline)  # replicas may have just become known
            replica_id = self._choose(tried, model_id)
            if replica_id is not None:
                try:
                    return replica_id, await self._start_call(replica_id, kind, payload, deadline)
                except _Rejected as rejection:
                    tried.add(replica_id)
                    self._note_rejection(replica_id, rejection)
                    continue
            now = loop.time()
            if not self._replicas:
                self._report_demand()
                if now > no_replica_deadline:
                    raise ReplicaUnavailableError(
                        f"no replica of deployment '{self._deployment}' in app "
                        f"'{self._app}' became available within {NO_REPLICA_DEADLINE_S}s"
                    )
            if now >= deadline:
                raise self._unplaced(timeout_s)
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait_s, deadline - now)):
                    await changed.wait()
            wait_s = min(wait_s * 2, _RETRY_WAIT_MAX_S)
            tried.clear()

    def _note_rejection(self, replica_id: str, rejection: _Rejected) -> None:
        view = self._replicas.get(replica_id)
        if rejection.avoid and view is not None:
            view.unreachable_until = time.monotonic() + _UNREACHABLE_PENALTY_S

    async def _start_call(
        self, replica_id: str, kind: Kind, payload: bytes, deadline: float
    ) -> Call:
        """Send the call to one replica and wait for its admission (CallExpired at deadline)."""
        view = self._replicas[replica_id]
        connection = self._connections.get(replica_id)
        if connection is None or connection.closed:
            connection = await self._connect(replica_id, view.address, deadline)
        call = connection.start(kind, payload)
        self._deadlines.set(call, deadline)
        view.in_flight += 1
        try:
            load = await call.accepted
        except asyncio.CancelledError:
            call.cancel()
            self._finish(replica_id, call)
            raise
        except CallExpired:
            self._finish(replica_id, call)
            raise
        except ConnectionLost:
            self._finish(replica_id, call)
            raise _Rejected(avoid=True) from None
        if load is None:
            self._finish(replica_id, call)
            raise _Rejected(avoid=call.draining)
        view.reported_load = load
        view.reported_at = time.monotonic()
        return call

    async def _connect(self, replica_id: str, address: str, deadline: float) -> Connection:
        """The connection to a replica, or _Rejected when it cannot be had (CallExpired)."""
        try:
            async with asyncio.timeout_at(deadline):
                return await self._connection(replica_id, address)
        except HandshakeError as error:
            self._refusal = str(error)
            logger.warning(
                "replica %s at %s failed the data-plane handshake (%s); treating it as unreachable",
                replica_id,
                address,
                error,
            )
            raise _Rejected(avoid=True) from None
        except (OSError, TimeoutError):
            if asyncio.get_running_loop().time() >= deadline:
                raise CallExpired() from None  # our own deadline, not the replica's fault
            raise _Rejected(avoid=True) from None

    def _finish(self, replica_id: str, call: Call) -> None:
        call._connection.done(call)
        self._deadlines.discard(call)
        self._release(replica_id)

    def _report_demand(self) -> None:
        """Tell the controller a call waits with no replica (scale from zero), at most 1/s."""
        now = time.monotonic()
        if now - self._demand_reported_at < _DEMAND_EVERY_S:
            return
        self._demand_reported_at = now
        url = f"{self._cluster.controller_url}{DEMAND_PREFIX}{self._app}/{self._deployment}"

        async def post() -> None:
            with contextlib.suppress(httpx.HTTPError):
                async with httpx.AsyncClient(
                    timeout=5.0, verify=self._cluster.http_verify()
                ) as client:
                    await client.post(url, headers={CLUSTER_TOKEN_HEADER: self._cluster.token})

        task = asyncio.get_running_loop().create_task(post())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _release(self, replica_id: str) -> None:
        view = self._replicas.get(replica_id)
        if view is not None:
            view.in_flight -= 1
        if self._waiting:
            self._wake()  # only calls waiting for room care that a slot came free

    # Calling -----------------------------------------------------------------------------

    async def call(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float,
        model_id: str = "",
    ) -> Any:
        """Place the call, wait for its answer; all within ``timeout_s`` (then it is cancelled)."""
        metadata = call_metadata()
        payload = codec.dumps(
            (method, args, kwargs, model_id, metadata)
            if model_id or metadata
            else (method, args, kwargs)
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            replica_id, call = await self._assign(Kind.CALL, payload, deadline, timeout_s, model_id)
        except CallExpired:
            raise self._unplaced(timeout_s) from None
        try:
            response = await call.result
        except asyncio.CancelledError:
            call.cancel()  # the callee's task is cancelled too
            raise
        except CallExpired:
            raise self._ran_out(method, timeout_s, "finish") from None
        except ConnectionLost:
            raise ReplicaUnavailableError(
                f"replica {replica_id} went away after accepting the call"
            ) from None
        finally:
            self._finish(replica_id, call)
        return codec.decode(response, method, replica_id)

    async def stream(
        self,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        timeout_s: float,
        model_id: str = "",
    ) -> AsyncIterator[Any]:
        """The callee's items; placing the call and each wait for an item get ``timeout_s``."""
        metadata = call_metadata()
        payload = codec.dumps(
            (method, args, kwargs, model_id, metadata)
            if model_id or metadata
            else (method, args, kwargs)
        )
        deadline = asyncio.get_running_loop().time() + timeout_s
        try:
            replica_id, call = await self._assign(
                Kind.STREAM, payload, deadline, timeout_s, model_id
            )
        except CallExpired:
            raise self._unplaced(timeout_s) from None
        assert isinstance(call, StreamCall)
        self._deadlines.discard(call)  # from here each wait for an item has its own
        deadlines = self._deadlines
        # Credit goes back as the consumer takes items, half a window at a time: the callee
        # never has more than STREAM_WINDOW items ahead of the consumer.
        half_window = STREAM_WINDOW // 2
        consumed = 0
        try:
            while True:
                kind, message = call.take() or await call.wait(deadlines, timeout_s)
                if kind is Kind.END:
                    if message:
                        codec.decode(message, method, replica_id)  # raises the remote error
                    return
                items, failure = codec.decode_items(message, kind is Kind.ITEMS, method, replica_id)
                for item in items:
                    yield item
                    consumed += 1
                    if consumed == half_window:
                        call.grant(consumed)
                        consumed = 0
                if failure is not None:
                    raise failure
        except ConnectionLost:
            raise ReplicaUnavailableError(
                f"replica {replica_id} went away during the stream"
            ) from None
        except CallExpired:
            raise self._ran_out(method, timeout_s, "send its next item") from None
        finally:
            call.cancel()  # a no-op once the stream has ended
            self._finish(replica_id, call)

    def _unplaced(self, timeout_s: float) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"no replica of deployment '{self._deployment}' in app '{self._app}' accepted the "
            f"call within timeout_s={timeout_s} ({len(self._replicas)} known, all unreachable, "
            "draining or at max_ongoing_requests); set a longer one with "
            "handle.options(timeout_s=...) or add replicas."
            + (f" The last refused connection: {self._refusal}" if self._refusal else "")
        )

    def _ran_out(self, method: str, timeout_s: float, what: str) -> RequestTimeoutError:
        return RequestTimeoutError(
            f"the call to {self._deployment}.{method} in app '{self._app}' did not {what} "
            f"within timeout_s={timeout_s}; it was cancelled in the callee. Set a longer "
            "one with handle.options(timeout_s=...) if it needs more time."
        )


def _retrieve(task: asyncio.Task[Connection]) -> None:
    if not task.cancelled():
        task.exception()
