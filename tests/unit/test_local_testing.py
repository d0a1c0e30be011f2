"""swell.run(app, _local_testing_mode=True): deployments in this process, called by handles."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

import swell as serve
from swell.handle import DeploymentHandle


@serve.deployment
class Doubler:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def double(self, value: int) -> int:
        if value < 0:
            raise ValueError(f"negative: {value}")
        return 2 * value + self.offset

    def count(self, limit: int) -> Iterator[int]:
        yield from range(limit)


@serve.deployment(user_config={"greeting": "hi"})
class Front:
    def __init__(self, doubler: DeploymentHandle, other: DeploymentHandle) -> None:
        self.doubler = doubler
        self.other = other
        self.greeting = ""

    def reconfigure(self, config: dict[str, str]) -> None:
        self.greeting = config["greeting"]

    async def __call__(self, value: int) -> dict[str, object]:
        first, second = self.doubler.double.remote(value), self.other.double.remote(value)
        return {"greeting": self.greeting, "sum": sum([await first, await second])}


@pytest.fixture
def local() -> Iterator[None]:
    yield
    serve.shutdown()


def test_an_app_runs_in_process_and_handles_call_it(local: None) -> None:
    handle = serve.run(Front.bind(Doubler.bind(0), Doubler.bind(100)), _local_testing_mode=True)
    assert handle.remote(3).result(timeout_s=30) == {"greeting": "hi", "sum": 112}
    doubler = serve.get_deployment_handle("Doubler_1", "default")
    assert doubler.double.remote(1).result(timeout_s=30) == 102
    assert list(doubler.options(stream=True).count.remote(3)) == [0, 1, 2]
    assert serve.get_app_handle("default").deployment_name == "Front"

    async def from_async() -> int:
        result: int = await doubler.double.remote(2)
        return result

    assert asyncio.run(from_async()) == 104


def test_errors_keep_their_type_in_local_mode(local: None) -> None:
    serve.run(Doubler.bind(0), _local_testing_mode=True)
    handle = serve.get_deployment_handle("Doubler", "default")
    with pytest.raises(ValueError, match="negative: -1"):
        handle.double.remote(-1).result(timeout_s=30)
    with pytest.raises(serve.RemoteError):
        handle.double.remote(-1).result(timeout_s=30)


def test_logging_config_is_validated(local: None) -> None:
    with pytest.raises(serve.ConfigError, match=r"logging_config\.encoding"):
        serve.run(Doubler.bind(0), logging_config={"encoding": "XML"}, _local_testing_mode=True)
    serve.run(Doubler.bind(0), logging_config={"log_level": "debug"}, _local_testing_mode=True)


@serve.deployment
class LocalModels:
    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> str:
        return f"loaded {model_id}"

    async def predict(self) -> str:
        model: str = await self.get_model(serve.get_multiplexed_model_id())
        return model

    def model_id(self) -> str:
        return serve.get_multiplexed_model_id()


def test_multiplexed_model_ids_reach_local_deployments(local: None) -> None:
    handle = serve.run(LocalModels.bind(), _local_testing_mode=True)
    assert handle.options(multiplexed_model_id="a").predict.remote().result() == "loaded a"
    assert handle.options(multiplexed_model_id="b").model_id.remote().result() == "b"
    assert handle.model_id.remote().result() == ""
