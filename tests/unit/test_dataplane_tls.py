"""The data plane over TLS (--tls-cert): real sockets, real TLS, a throwaway CA."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import pytest

from swell._cluster_tls import load
from swell._dataplane.client import Connection
from swell._dataplane.handshake import HandshakeError
from swell.exceptions import RequestTimeoutError
from tests.certs import TestCA
from tests.unit.dataplane_fixtures import TOKEN, router_for, start_replica, stop_replica


def run(coro: Awaitable[None], timeout_s: float = 30) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(coro, timeout_s)

    asyncio.run(bounded())


def test_calls_and_streams_over_tls(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert = ca.issue("cluster")
    tls = load(str(cert.cert), str(cert.key), str(ca.cert))
    assert tls is not None

    async def scenario() -> None:
        replica = await start_replica(tls=tls.server_context())
        router = router_for({replica.replica_id: replica.address}, tls_ca=tls.ca)
        try:
            assert await router.call("echo", ("over TLS",), {}, 10.0) == "over TLS"
            streamed = [item async for item in router.stream("tokens", (3,), {}, 10.0)]
            assert len(streamed) == 3
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_a_caller_that_trusts_another_ca_gets_an_error_that_says_so(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert = ca.issue("cluster")
    tls = load(str(cert.cert), str(cert.key), str(ca.cert))
    stranger = TestCA(tmp_path, "stranger CA")
    assert tls is not None

    async def scenario() -> None:
        replica = await start_replica(tls=tls.server_context())
        router = router_for({replica.replica_id: replica.address}, tls_ca=str(stranger.cert))
        try:
            with pytest.raises(RequestTimeoutError, match="the cluster CA \\(--tls-ca\\)"):
                await router.call("echo", ("x",), {}, 1.0)
            assert replica.dispatcher.calls == []
        finally:
            await router.close()
            await stop_replica(replica)

    run(scenario())


def test_plain_and_tls_do_not_mix(tmp_path: Path) -> None:
    ca = TestCA(tmp_path)
    cert = ca.issue("cluster")
    tls = load(str(cert.cert), str(cert.key), str(ca.cert))
    assert tls is not None

    async def scenario() -> None:
        secure = await start_replica(tls=tls.server_context())
        plain = await start_replica(replica_id="Model-2")
        try:
            # A plaintext caller (holding the token) gets no answer from a TLS replica...
            with pytest.raises((HandshakeError, ConnectionError)):
                await Connection.open(secure.address, TOKEN, secure.replica_id)
            # ...and a TLS caller says what went wrong with a plaintext one.
            with pytest.raises(HandshakeError, match="does it listen with TLS"):
                await Connection.open(plain.address, TOKEN, "Model-2", tls=tls.client_context())
            assert secure.dispatcher.calls == [] and plain.dispatcher.calls == []
        finally:
            await stop_replica(secure)
            await stop_replica(plain)

    run(scenario())
