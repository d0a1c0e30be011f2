"""Model multiplexing through real HAProxy and real replicas: each model's requests land on a
replica that holds it, from HTTP (the serve_multiplexed_model_id header) and from handles."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

import swell
from swell._protocol import MULTIPLEXED_MODEL_ID_HEADER, backend_name
from tests.integration import multiplex_apps
from tests.integration.conftest import Swell, haproxy_binaries, wait_until
from tests.integration.ingress_harness import Upstream, running_ingress

MODELS = [f"model-{index}" for index in range(6)]


@pytest.fixture(params=haproxy_binaries())
def binary(request: pytest.FixtureRequest) -> str:
    path: str = request.param
    return path


def test_the_ingress_keeps_each_model_on_one_server(binary: str, tmp_path: Path) -> None:
    """Stand-in replicas: with the header a model sticks to the server that first served it;
    without it requests are still spread; draining a server moves its models elsewhere."""
    with running_ingress(binary, tmp_path / "rt") as ingress, httpx.Client() as client:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        for name in ("r1", "r2"):
            upstream = ingress.upstream(name)
            ingress.call(manager.add_server("a", name, upstream.address, 5))

        def served_by(model: str | None) -> str:
            headers = {MULTIPLEXED_MODEL_ID_HEADER: model} if model else {}
            response = client.get(ingress.url + "/", headers=headers)
            assert response.status_code == 200, response.text
            server: str = response.json()["server"]
            return server

        # Both are up once each has answered a plain request (leastconn alternates idle ones).
        seen: set[str] = set()
        for _ in range(200):
            seen.add(served_by(None))
            if seen == {"r1", "r2"}:
                break
        assert seen == {"r1", "r2"}
        assert {served_by(None) for _ in range(10)} == {"r1", "r2"}

        owner = {model: served_by(model) for model in MODELS}
        assert set(owner.values()) == {"r1", "r2"}  # new models are spread
        for _ in range(3):
            for model in MODELS:
                assert served_by(model) == owner[model]

        ingress.call(manager.drain_server("a", "r1"))
        for model in MODELS:
            assert served_by(model) == "r2", f"{model} still went to the draining r1"
        # Membership changes through the runtime API move no model that has a live replica.
        ingress.call(manager.remove_server("a", "r1"))
        r3 = ingress.upstream("r3")
        ingress.call(manager.add_server("a", "r3", r3.address, 5))
        wait_until(lambda: served_by(None) == "r3", 15, "r3 to take requests")
        assert served_by("a-new-model") in {"r2", "r3"}
        for model in MODELS:
            assert served_by(model) == "r2", f"{model} moved when r3 joined"


def test_a_busy_replica_does_not_hold_back_its_models_requests(binary: str, tmp_path: Path) -> None:
    """While the replica holding a model is full and requests queue, the model's next request
    goes to another replica (as Ray's routers fall back); the model stays mapped to its own."""
    with running_ingress(binary, tmp_path / "rt") as ingress, httpx.Client() as client:
        manager = ingress.manager
        ingress.call(manager.set_route("a", "/"))
        for name in ("r1", "r2"):
            upstream = ingress.upstream(name)
            ingress.call(manager.add_server("a", name, upstream.address, 5))  # maxconn 5
        hot = {MULTIPLEXED_MODEL_ID_HEADER: "hot"}

        def server(headers: dict[str, str]) -> str:
            name: str = client.get(ingress.url + "/", headers=headers).json()["server"]
            return name

        seen: set[str] = set()

        def both_serve() -> bool:
            seen.add(server({}))
            return seen == {"r1", "r2"}

        wait_until(both_serve, 15, "both servers to take requests")
        owner = server(hot)
        other = ({"r1", "r2"} - {owner}).pop()

        def slow() -> int:
            url = ingress.url + "/stream?chunks=3&gap=1"
            return httpx.get(url, headers=hot, timeout=30).status_code

        with ThreadPoolExecutor(max_workers=6) as pool:
            # Five fill the owner's slots, the sixth waits in its queue.
            streams = [pool.submit(slow) for _ in range(6)]

            def owner_full() -> bool:
                sessions = ingress.call(manager.runtime.server_sessions(backend_name("a")))
                return sessions.get(owner, 0) >= 6

            wait_until(owner_full, 15, f"{owner} to be full with one queued")
            assert server(hot) == other
            assert [stream.result() for stream in streams] == [200] * 6
        assert server(hot) == owner


def test_a_model_never_sticks_to_the_wake_up_server(binary: str, tmp_path: Path) -> None:
    """A cold app's first request for a model goes through the wake-up server; once a
    replica is up, the model's requests go to the replica, not through the controller."""
    wake = Upstream("wake")
    try:
        with (
            running_ingress(binary, tmp_path / "rt", wake_address=wake.address) as ingress,
            httpx.Client() as client,
        ):
            ingress.call(ingress.manager.set_route("a", "/"))
            headers = {MULTIPLEXED_MODEL_ID_HEADER: "cold-model"}

            def server(headers: dict[str, str]) -> str:
                name: str = client.get(ingress.url + "/", headers=headers).json()["server"]
                return name

            assert server(headers) == "wake"
            replica = ingress.upstream("r1")
            ingress.call(ingress.manager.add_server("a", "r1", replica.address, 5))
            wait_until(lambda: server({}) == "r1", 15, "r1 to take requests")
            assert server(headers) == "r1"
    finally:
        wake.stop()


@pytest.mark.parametrize("serve", haproxy_binaries(), indirect=True)
def test_requests_land_on_the_replica_holding_their_model(serve: Swell) -> None:
    """6 models over 3 replicas (3 models each at most). After one HTTP request per model,
    every HTTP and handle request finds its model already loaded where it lands: the steady
    state loads nothing, so the share is exactly 1.0."""
    swell.run(multiplex_apps.models_app, name="mux", route_prefix="/mux")
    handle = swell.get_deployment_handle("Models", "mux")

    def over_http(model: str) -> dict[str, Any]:
        response = httpx.get(
            serve.url + "/mux", headers={MULTIPLEXED_MODEL_ID_HEADER: model}, timeout=30
        )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        assert answer["model"] == model
        return answer

    def over_handle(model: str) -> dict[str, Any]:
        answer: dict[str, Any] = (
            handle.options(multiplexed_model_id=model).predict.remote().result(timeout_s=30)
        )
        assert answer["model"] == model
        return answer

    owner = {model: over_http(model)["replica"] for model in MODELS}  # the warm-up
    assert len(set(owner.values())) == 3  # leastconn spread the new models over the replicas

    picks = [random.choice(MODELS) for _ in range(240)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        http_answers = list(pool.map(over_http, picks[:120]))
        handle_answers = list(pool.map(over_handle, picks[120:]))

    for index, (model, answer) in enumerate(zip(picks, http_answers + handle_answers, strict=True)):
        assert answer["replica"] == owner[model], (
            f"#{index} {model} left its replica: {answer} {owner}"
        )
    http_share = sum(a["hit"] for a in http_answers) / len(http_answers)
    handle_share = sum(a["hit"] for a in handle_answers) / len(handle_answers)
    assert (http_share, handle_share) == (1.0, 1.0)
    unloaded = [handle.unloaded_models.remote().result(timeout_s=30) for _ in range(9)]
    assert not any(unloaded), "no model should have been evicted"


def test_eviction_calls_del_and_the_model_id_reaches_the_code(serve: Swell) -> None:
    swell.run(multiplex_apps.one_model_app, name="one", route_prefix="/one")
    handle = swell.get_deployment_handle("OneModel", "one")
    first = serve.client.get("/one", headers={MULTIPLEXED_MODEL_ID_HEADER: "alpha"}).json()
    assert (first["model"], first["hit"]) == ("alpha", False)
    again = serve.client.get("/one", headers={MULTIPLEXED_MODEL_ID_HEADER: "alpha"}).json()
    assert again["hit"] is True
    # A second model pushes the first out of the one slot: its __del__ runs.
    beta = handle.options(multiplexed_model_id="beta").predict.remote().result(timeout_s=30)
    assert (beta["model"], beta["hit"]) == ("beta", False)
    assert handle.unloaded_models.remote().result(timeout_s=30) == ["alpha"]
    # get_multiplexed_model_id() in a sync method (a worker thread), with and without an id.
    in_thread = handle.options(multiplexed_model_id="gamma").model_id_in_a_thread.remote()
    assert in_thread.result(timeout_s=30) == "gamma"
    assert handle.model_id_in_a_thread.remote().result(timeout_s=30) == ""
    streamed = handle.options(multiplexed_model_id="delta", stream=True).model_ids.remote(2)
    assert list(streamed) == ["delta", "delta"]
    # A plain function deployment, no @multiplexed: the header's id still reaches it.
    swell.run(multiplex_apps.echo_app, name="echo", route_prefix="/echo")
    # A keep-alive connection may still be served by the worker from before the route existed.
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        wait_until(lambda: client.get("/echo").status_code == 200, 15, "the /echo route")
        echoed = client.get("/echo", headers={MULTIPLEXED_MODEL_ID_HEADER: "epsilon"})
        assert echoed.text == "epsilon"
        assert client.get("/echo").text == ""
