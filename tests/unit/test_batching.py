"""@swell.batch: batches form by size or by the oldest call's deadline, event-driven tests."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import pickle
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import cloudpickle
import pytest

import swell
from swell import batch

# A timeout no test could reach: a batch that dispatches at all did so because it was full.
NEVER = 3600.0


class Recorder:
    """Records every batch it is handed, so tests assert on how calls were grouped."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    @batch(max_batch_size=3, batch_wait_timeout_s=NEVER)
    async def double(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        return [item * 2 for item in items]

    @batch(max_batch_size=4, batch_wait_timeout_s=0)
    async def pair(self, left: list[int], right: list[int] | None = None) -> list[Any]:
        self.batches.append([left, right])
        return [(a, b) for a, b in zip(left, right or [None] * len(left), strict=True)]

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    async def broken(self, items: list[int]) -> list[int]:
        raise ValueError(f"bad batch {items}")

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    async def short(self, items: list[int]) -> list[int]:
        return items[:1]

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    async def stream(self, counts: list[int]) -> AsyncIterator[list[Any]]:
        self.batches.append(counts)
        for step in range(max(counts)):
            yield [f"{i}:{step}" if step < n else StopIteration for i, n in enumerate(counts)]

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    def sync_square(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        return [item * item for item in items]

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    def sync_stream(self, items: list[str]) -> Iterator[list[str]]:
        for suffix in ("a", "b"):
            yield [item + suffix for item in items]


def test_a_full_batch_runs_at_once_and_each_caller_gets_its_element() -> None:
    recorder = Recorder()

    async def main() -> list[int]:
        return list(await asyncio.gather(*(recorder.double(i) for i in range(6))))

    assert asyncio.run(main()) == [0, 2, 4, 6, 8, 10]
    assert recorder.batches == [[0, 1, 2], [3, 4, 5]]


def test_a_lone_call_runs_when_its_wait_is_over() -> None:
    @batch(max_batch_size=100, batch_wait_timeout_s=0)
    async def identity(items: list[str]) -> list[str]:
        return items

    assert asyncio.run(identity("only")) == "only"


def test_several_parameters_and_defaults_become_columns() -> None:
    recorder = Recorder()

    async def main() -> list[Any]:
        return list(await asyncio.gather(recorder.pair(1, 2), recorder.pair(3, right=4)))

    assert asyncio.run(main()) == [(1, 2), (3, 4)]


def test_an_error_reaches_every_caller_of_the_batch() -> None:
    recorder = Recorder()

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(*(recorder.broken(i) for i in range(2)), return_exceptions=True)
        )

    errors = asyncio.run(main())
    assert all(isinstance(e, ValueError) and "bad batch [0, 1]" in str(e) for e in errors)


def test_a_wrong_number_of_results_is_an_error_naming_the_method() -> None:
    recorder = Recorder()

    async def main() -> list[Any]:
        return list(
            await asyncio.gather(*(recorder.short(i) for i in range(2)), return_exceptions=True)
        )

    errors = asyncio.run(main())
    assert all(isinstance(e, TypeError) and "returned 1 results" in str(e) for e in errors)


def test_generators_stream_one_output_per_caller_and_stop_each_on_its_own() -> None:
    recorder = Recorder()

    async def collect(count: int) -> list[str]:
        return [item async for item in recorder.stream(count)]

    async def main() -> list[list[str]]:
        return list(await asyncio.gather(collect(1), collect(3)))

    assert asyncio.run(main()) == [["0:0"], ["1:0", "1:1", "1:2"]]
    assert recorder.batches == [[1, 3]]


def test_sync_methods_batch_calls_from_threads() -> None:
    recorder = Recorder()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        squares = list(pool.map(recorder.sync_square, [1, 2, 3, 4]))
        streams = list(pool.map(lambda s: list(recorder.sync_stream(s)), ["x", "y"]))
    assert squares == [1, 4, 9, 16]
    assert sorted(len(b) for b in recorder.batches) == [2, 2]
    assert streams == [["xa", "xb"], ["ya", "yb"]]


def test_a_sync_method_called_from_async_code_says_what_to_do() -> None:
    async def main() -> None:
        Recorder().sync_square(1)

    with pytest.raises(RuntimeError, match="make it `async def`"):
        asyncio.run(main())


def test_max_concurrent_batches_bounds_batches_in_flight() -> None:
    running = 0
    most = 0

    @batch(max_batch_size=1, batch_wait_timeout_s=0, max_concurrent_batches=2)
    async def work(items: list[int]) -> list[int]:
        nonlocal running, most
        running += 1
        most = max(most, running)
        for _ in range(3):
            await asyncio.sleep(0)  # yield: let other batches start if they may
        running -= 1
        return items

    async def main() -> list[int]:
        return list(await asyncio.gather(*(work(i) for i in range(6))))

    assert asyncio.run(main()) == list(range(6))
    assert most == 2


def test_batch_size_fn_limits_the_total_size() -> None:
    batches: list[list[str]] = []

    @batch(max_batch_size=5, batch_wait_timeout_s=NEVER, batch_size_fn=lambda xs: sum(map(len, xs)))
    async def join(items: list[str]) -> list[str]:
        batches.append(items)
        return items

    async def main() -> list[str]:
        return list(await asyncio.gather(join("ab"), join("cde"), join("fghij")))

    assert asyncio.run(main()) == ["ab", "cde", "fghij"]
    assert batches == [["ab", "cde"], ["fghij"]]


def test_setters_change_later_batches_and_are_validated() -> None:
    recorder = Recorder()
    recorder.double.set_max_batch_size(2)  # type: ignore[attr-defined]

    async def main() -> list[int]:
        return list(await asyncio.gather(*(recorder.double(i) for i in range(4))))

    try:
        assert asyncio.run(main()) == [0, 2, 4, 6]
        assert recorder.batches == [[0, 1], [2, 3]]
        with pytest.raises(swell.ConfigError, match="max_batch_size=0"):
            recorder.double.set_max_batch_size(0)  # type: ignore[attr-defined]
        recorder.double.set_batch_wait_timeout_s(5)  # type: ignore[attr-defined]
        assert recorder.double.get_batch_wait_timeout_s() == 5  # type: ignore[attr-defined]
    finally:
        recorder.double.set_max_batch_size(3)  # type: ignore[attr-defined]
        recorder.double.set_batch_wait_timeout_s(NEVER)  # type: ignore[attr-defined]


def test_bad_options_name_the_option() -> None:
    with pytest.raises(swell.ConfigError, match="max_batch_size"):
        batch(max_batch_size=0)
    with pytest.raises(swell.ConfigError, match="batch_wait_timeout_s"):
        batch(batch_wait_timeout_s=-1)
    with pytest.raises(swell.ConfigError, match=r"\*args"):

        @batch
        async def variadic(*args: Any) -> list[Any]:
            return list(args)


def test_a_caller_that_left_before_its_batch_is_not_computed() -> None:
    seen: list[list[int]] = []

    @batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
    async def record(items: list[int]) -> list[int]:
        seen.append(items)
        return items

    async def main() -> list[int]:
        leaving = asyncio.ensure_future(record(0))
        await asyncio.sleep(0)
        leaving.cancel()
        return list(await asyncio.gather(record(1), record(2)))

    assert asyncio.run(main()) == [1, 2]
    assert seen == [[1, 2]]


@batch(max_batch_size=2, batch_wait_timeout_s=NEVER)
async def triple(items: list[int]) -> list[int]:
    return [item * 3 for item in items]


def test_a_used_batched_function_ships_by_value_without_its_queues() -> None:
    async def main(fn: Any) -> list[int]:
        return list(await asyncio.gather(fn(1), fn(2)))

    assert asyncio.run(main(triple)) == [3, 6]  # triple now holds a queue for that loop
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)  # as for code defined in __main__
    try:
        payload = cloudpickle.dumps(triple)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    rebuilt = pickle.loads(payload)
    assert rebuilt is not triple
    assert asyncio.run(main(rebuilt)) == [3, 6]


_STREAM_IN_A_FRESH_INTERPRETER = """
import asyncio, concurrent.futures, json, pickle, sys

recorder = pickle.loads(sys.stdin.buffer.read())()

async def collect(count):
    return [item async for item in recorder.stream(count)]

async def main():
    return list(await asyncio.gather(collect(1), collect(3)))

with concurrent.futures.ThreadPoolExecutor(2) as pool:
    synced = list(pool.map(lambda s: list(recorder.sync_stream(s)), ["x", "y"]))
print(json.dumps([asyncio.run(main()), synced]))
"""


def test_batched_generators_shipped_by_value_end_each_stream() -> None:
    # A class defined in __main__ reaches replicas by value, the batch wrappers with it; the
    # end-of-stream marker must still be recognised there (it once arrived as an item). A
    # fresh interpreter, because cloudpickle hands back the original class in this one.
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    try:
        payload = cloudpickle.dumps(Recorder)
    finally:
        cloudpickle.unregister_pickle_by_value(module)
    child = subprocess.run(
        [sys.executable, "-c", _STREAM_IN_A_FRESH_INTERPRETER],
        input=payload,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert json.loads(child.stdout) == [
        [["0:0"], ["1:0", "1:1", "1:2"]],
        [["xa", "xb"], ["ya", "yb"]],
    ]
