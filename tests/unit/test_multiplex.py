"""The per-replica model cache behind @multiplexed: LRU, shared loads, __del__ on eviction."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from swell import multiplex
from swell._context import multiplexed_model_id
from swell._dataplane.multiplex_choice import choose_for_model, parse_models
from swell.exceptions import ConfigError


class _Model:
    unloaded: list[str]

    def __init__(self, model_id: str, unloaded: list[str]) -> None:
        self.model_id = model_id
        self.unloaded = unloaded

    def __del__(self) -> None:
        self.unloaded.append(self.model_id)


class _AsyncModel(_Model):
    async def __del__(self) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        self.unloaded.append(self.model_id)


class _Loader:
    def __init__(self, model_type: type[_Model] = _Model) -> None:
        self.loads: list[str] = []
        self.unloaded: list[str] = []
        self.gate: asyncio.Event | None = None
        self._type = model_type

    @multiplex.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str) -> _Model:
        self.loads.append(model_id)
        if self.gate is not None:
            await self.gate.wait()
        return self._type(model_id, self.unloaded)


def test_lru_keeps_the_recently_used_and_unloads_the_oldest() -> None:
    async def scenario() -> _Loader:
        loader = _Loader()
        a = await loader.get_model("a")
        assert a.model_id == "a"
        await loader.get_model("b")
        assert await loader.get_model("a") is a  # a is now the most recent
        await loader.get_model("c")  # b goes out, not a
        assert await loader.get_model("a") is a
        return loader

    loader = asyncio.run(scenario())
    assert loader.loads == ["a", "b", "c"]
    assert "b" in loader.unloaded and "a" not in loader.unloaded


# Python calling an async __del__ itself would make a coroutine nobody awaits: that is an error.
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_an_async_del_is_awaited_on_eviction_and_at_shutdown() -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        loader = _Loader(_AsyncModel)
        for model_id in ("a", "b", "c"):
            await loader.get_model(model_id)
        evicted = list(loader.unloaded)
        await multiplex.unload_all()  # as the replica stops
        return evicted, loader.unloaded

    evicted, unloaded = asyncio.run(scenario())
    assert evicted == ["a"] and unloaded == ["a", "b", "c"]
    gc.collect()  # the models are gone: Python did not call their __del__ again


def test_del_runs_once_even_when_the_model_is_collected_later() -> None:
    async def scenario() -> list[str]:
        loader = _Loader()
        for model_id in ("a", "b", "c"):
            await loader.get_model(model_id)
        return loader.unloaded

    unloaded = asyncio.run(scenario())
    gc.collect()
    assert unloaded.count("a") == 1 and unloaded.count("b") == 1


def test_concurrent_requests_for_one_model_share_one_load() -> None:
    async def scenario() -> tuple[_Loader, list[Any]]:
        loader = _Loader()
        loader.gate = asyncio.Event()
        waiters = [asyncio.ensure_future(loader.get_model("a")) for _ in range(5)]
        await asyncio.sleep(0.01)
        loader.gate.set()
        return loader, await asyncio.gather(*waiters)

    loader, models = asyncio.run(scenario())
    assert loader.loads == ["a"]
    assert all(model is models[0] for model in models)


def test_a_cancelled_waiter_does_not_cancel_the_shared_load() -> None:
    async def scenario() -> tuple[_Loader, _Model]:
        loader = _Loader()
        loader.gate = asyncio.Event()
        first = asyncio.ensure_future(loader.get_model("a"))
        second = asyncio.ensure_future(loader.get_model("a"))
        await asyncio.sleep(0.01)
        first.cancel()
        loader.gate.set()
        return loader, await second

    loader, model = asyncio.run(scenario())
    assert model.model_id == "a" and loader.loads == ["a"]


def test_the_listener_hears_loads_and_evictions() -> None:
    reports: list[list[str]] = []

    async def scenario() -> None:
        loader = _Loader()
        for model_id in ("a", "b", "c"):
            await loader.get_model(model_id)

    gc.collect()  # caches of earlier tests' loaders (instance <-> cache cycles) go first
    multiplex.set_listener(reports.append)
    try:
        asyncio.run(scenario())
    finally:
        multiplex.set_listener(None)
    assert reports[0] == ["a"] and reports[1] == ["a", "b"]
    assert reports[-1] == ["b", "c"]


def test_a_function_loader_has_one_cache() -> None:
    loads: list[str] = []

    @multiplex.multiplexed(max_num_models_per_replica=1)
    async def load(model_id: str) -> str:
        loads.append(model_id)
        return model_id.upper()

    async def scenario() -> list[str]:
        return [await load("x"), await load("x"), await load("y"), await load("x")]

    assert asyncio.run(scenario()) == ["X", "X", "Y", "X"]
    assert loads == ["x", "y", "x"]


def test_bad_uses_are_refused_with_the_fix() -> None:
    with pytest.raises(TypeError, match="async def"):
        multiplex.multiplexed(lambda model_id: model_id)  # type: ignore[arg-type,return-value]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="max_num_models_per_replica"):
            multiplex.multiplexed(max_num_models_per_replica=bad)  # type: ignore[arg-type]
    loader = _Loader()
    with pytest.raises(ValueError, match="serve_multiplexed_model_id"):
        asyncio.run(loader.get_model(""))
    with pytest.raises(TypeError, match="string"):
        asyncio.run(loader.get_model(3))  # type: ignore[arg-type]


def test_get_multiplexed_model_id_reads_the_request_context() -> None:
    assert multiplex.get_multiplexed_model_id() == ""
    token = multiplexed_model_id.set("m1")
    try:
        assert multiplex.get_multiplexed_model_id() == "m1"
    finally:
        multiplexed_model_id.reset(token)


class _View:
    def __init__(self, models: frozenset[str] | None, load: int = 0) -> None:
        self.models = models
        self.load = load


def _choose(views: dict[str, _View], model_id: str) -> str:
    return choose_for_model(list(views), views, model_id, lambda view, now: view.load, 0.0)


def test_a_model_call_goes_to_a_replica_holding_the_model() -> None:
    views = {
        "a": _View(frozenset({"m1"}), load=9),
        "b": _View(frozenset({"m2"})),
        "c": _View(frozenset()),
    }
    assert {_choose(views, "m1") for _ in range(20)} == {"a"}  # even when busier
    # Two holders: the less loaded one.
    views["b"].models = frozenset({"m1", "m2"})
    assert {_choose(views, "m1") for _ in range(20)} == {"b"}


def test_a_new_model_goes_to_a_replica_with_the_fewest_and_then_stays() -> None:
    views = {"a": _View(frozenset({"m1", "m2"})), "b": _View(None), "c": _View(frozenset({"x"}))}
    chosen = _choose(views, "new")
    assert chosen == "b"  # None counts as holding nothing
    assert views["b"].models == frozenset({"new"})  # the next calls follow before it reports
    assert {_choose(views, "new") for _ in range(10)} == {"b"}


def test_models_frames_parse_or_are_ignored() -> None:
    assert parse_models(b'["a", "b"]') == frozenset({"a", "b"})
    assert parse_models(b"[]") == frozenset()
    for bad in (b"not json", b'{"a": 1}', b"[1]"):
        assert parse_models(bad) is None


def test_the_bare_decorator_keeps_three_and_minus_one_keeps_all() -> None:
    unloaded: list[str] = []

    class Bare:
        @multiplex.multiplexed
        async def get_model(self, model_id: str) -> _Model:
            return _Model(model_id, unloaded)

    class Unlimited:
        @multiplex.multiplexed(max_num_models_per_replica=-1)
        async def get_model(self, model_id: str) -> _Model:
            return _Model(model_id, unloaded)

    async def scenario() -> list[str]:
        bare, unlimited = Bare(), Unlimited()
        for index in range(4):
            await bare.get_model(f"bare-{index}")
        for index in range(50):
            await unlimited.get_model(f"all-{index}")
        return list(unloaded)  # before the instances (and their caches) are collected

    assert asyncio.run(scenario()) == ["bare-0"]  # the default keeps 3; -1 keeps all
