"""Ray Serve code, unchanged but for the import, through HAProxy and through handles."""

from __future__ import annotations

import asyncio
import concurrent.futures

import pytest

import swell
from tests.integration import compat_apps
from tests.integration.conftest import Swell


def test_batching_through_haproxy_and_through_handles(serve: Swell) -> None:
    handle = swell.run(compat_apps.batched_app)
    # Four concurrent requests fill one batch of four; the batch only runs once full.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda x: serve.client.post("/", json={"x": x}).json(), range(4)))
    assert answers == [{"x": x, "batch_size": 4} for x in range(4)]

    responses = [handle.triple.remote(value) for value in (1, 2, 3)]
    assert [r.result(timeout_s=30) for r in responses] == [3, 6, 9]

    # One bad input fails its whole batch: every caller gets the error, as its own type.
    failing = [handle.triple.remote(value) for value in (-1, 5, 6)]
    for response in failing:
        with pytest.raises(ValueError, match=r"negative input in \[-1, 5, 6\]"):
            response.result(timeout_s=30)

    async def two_streams() -> list[list[int]]:
        streaming = handle.options(stream=True).count

        async def collect(limit: int) -> list[int]:
            return [item async for item in streaming.remote(limit)]

        return list(await asyncio.gather(collect(1), collect(3)))

    assert asyncio.run(two_streams()) == [[0], [0, 1, 2]]


def test_handlers_without_parameters_and_returns_ray_encodes(serve: Swell) -> None:
    swell.run(compat_apps.no_request_app, name="none", route_prefix="/none")
    swell.run(compat_apps.shapes_app)
    assert serve.client.get("/none").json() == {"called": True}
    query = serve.client.get("/", params={"kind": "query", "extra": "1"})
    assert query.status_code == 200
    assert query.json() == {"kind": "query", "extra": "1"}
    assert serve.client.get("/", params={"kind": "model"}).json() == {
        "sensor": "t1",
        "value": 21.5,
    }
    assert serve.client.get("/", params={"kind": "pair"}).json() == {"left": 1, "right": 2}


def test_two_binds_are_renamed_and_responses_in_lists_are_resolved(serve: Swell) -> None:
    swell.run(compat_apps.summer_app)
    assert serve.client.get("/", params={"x": 5}).json() == {
        "small": 6,
        "large": 15,
        "total": 21,
    }
    deployments = swell.status().applications["default"].deployments
    assert sorted(deployments) == ["Adder", "Adder_1", "Summer"]


def test_replica_ranks_world_size_and_ingress_factories(serve: Swell) -> None:
    swell.run(compat_apps.ranked_app, name="ranked", route_prefix="/ranked")
    swell.run(compat_apps.factory_app)
    replicas = swell.status().applications["ranked"].deployments["Ranked"].replicas
    answers: dict[str, dict[str, object]] = {}
    for _ in range(200):
        body = serve.client.get("/ranked").json()
        answers[str(body["replica_id"])] = body
        if len(answers) == len(replicas):
            break
    assert sorted(answers) == sorted(r.replica_id for r in replicas)
    assert sorted(a["rank"] for a in answers.values()) == [0, 1]
    assert all(a["rank"] == a["rank_at_start"] for a in answers.values())
    assert {a["world_size"] for a in answers.values()} == {2}
    assert all(str(a["replica_id"]).endswith(str(a["unique_id"])) for a in answers.values())
    assert serve.client.get("/built").json() == {"built": "in the replica"}
