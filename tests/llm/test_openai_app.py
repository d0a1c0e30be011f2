"""The OpenAI API over scripted backends: shapes, routing, errors, streams, disconnects.

Real sockets (uvicorn on 127.0.0.1) and the real ``openai`` client; the backends are small
fakes, so these tests need no model. The same API over llama.cpp is in test_llama_cpp.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from swell.exceptions import BackPressureError, RemoteError
from swell.llm import (
    ContextLengthExceededError,
    EngineOverloadedError,
    GenerationChunk,
    GenerationRequest,
    build_openai_router,
)
from tests.llm.conftest import serve_in_thread

openai = pytest.importorskip("openai")

DEADLINE_S = 10.0


class ScriptedBackend:
    """Yields ``pieces`` (the last with ``finish``), or raises; records requests and closes."""

    def __init__(
        self,
        pieces: tuple[str, ...] = ("Hel", "lo"),
        finish: str = "stop",
        *,
        raise_before: BaseException | None = None,
        raise_after_first: BaseException | None = None,
        hang_after_first: bool = False,
        hang_before_first: bool = False,
    ) -> None:
        self.pieces = pieces
        self.finish = finish
        self.raise_before = raise_before
        self.raise_after_first = raise_after_first
        self.hang_after_first = hang_after_first
        self.hang_before_first = hang_before_first
        self.requests: list[GenerationRequest] = []
        self.started = threading.Event()
        self.closed = threading.Event()

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationChunk]:
        self.requests.append(request)
        self.started.set()
        try:
            if self.raise_before is not None:
                raise self.raise_before
            if self.hang_before_first:
                await asyncio.Event().wait()  # queued until the consumer goes away
            for i, piece in enumerate(self.pieces):
                last = i == len(self.pieces) - 1
                yield GenerationChunk(piece, 3, i + 1, self.finish if last else None)  # type: ignore[arg-type]
                if self.raise_after_first is not None:
                    raise self.raise_after_first
                if self.hang_after_first:
                    await asyncio.Event().wait()  # until the consumer goes away
        finally:
            self.closed.set()


@pytest.fixture
def serve() -> Iterator[Any]:
    with_servers: list[Any] = []

    def start(**backends: ScriptedBackend) -> str:
        context = serve_in_thread(build_openai_router(backends))
        with_servers.append(context)
        return context.__enter__()

    yield start
    for context in reversed(with_servers):
        context.__exit__(None, None, None)


def client(base_url: str) -> Any:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=30)


def test_models_are_listed_and_retrieved(serve: Any) -> None:
    url = serve(a=ScriptedBackend(), b=ScriptedBackend())
    models = client(url).models.list()
    assert [m.id for m in models.data] == ["a", "b"]
    assert all(m.object == "model" and m.owned_by == "swell" for m in models.data)
    assert client(url).models.retrieve("b").id == "b"
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("c")


def test_completion_shape_and_usage(serve: Any) -> None:
    backend = ScriptedBackend(("Hel", "lo"), "length")
    url = serve(m=backend)
    out = client(url).completions.create(
        model="m", prompt="Say", max_tokens=2, temperature=0.5, top_p=0.9, stop="\n", echo=True
    )
    assert out.object == "text_completion" and out.id.startswith("cmpl-") and out.model == "m"
    assert out.choices[0].text == "SayHello" and out.choices[0].finish_reason == "length"
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (
        3,
        2,
        5,
    )
    (request,) = backend.requests
    assert (request.prompt, request.max_tokens, request.temperature, request.top_p) == (
        "Say",
        2,
        0.5,
        0.9,
    )
    assert request.stop == ("\n",) and request.messages is None


def test_n_choices_get_consecutive_seeds_and_usage_sums(serve: Any) -> None:
    backend = ScriptedBackend()
    url = serve(m=backend)
    out = client(url).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "hi"}], n=3, seed=7
    )
    assert [c.index for c in out.choices] == [0, 1, 2]
    assert all(c.message.content == "Hello" and c.message.role == "assistant" for c in out.choices)
    assert sorted(r.seed for r in backend.requests if r.seed is not None) == [7, 8, 9]
    assert out.usage.prompt_tokens == 3 and out.usage.completion_tokens == 6
    assert backend.requests[0].messages is not None
    assert backend.requests[0].messages[0].content == "hi"


def test_chat_content_parts_and_max_completion_tokens(serve: Any) -> None:
    backend = ScriptedBackend()
    url = serve(m=backend)
    client(url).chat.completions.create(
        model="m",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ],
        max_completion_tokens=5,
        max_tokens=9,
    )
    (request,) = backend.requests
    assert request.messages is not None and request.messages[0].content == "ab"
    assert request.max_tokens == 5


def test_streamed_chat_with_several_choices_and_usage(serve: Any) -> None:
    url = serve(m=ScriptedBackend(("a", "b", "c")))
    stream = client(url).chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "hi"}],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    texts = {0: "", 1: ""}
    roles, finishes, usages = [], {}, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.usage is not None:
            usages.append(chunk.usage)
            assert chunk.choices == []
            continue
        for choice in chunk.choices:
            if choice.delta.role:
                roles.append(choice.index)
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {0: "abc", 1: "abc"} and sorted(roles) == [0, 1]
    assert finishes == {0: "stop", 1: "stop"}
    assert len(usages) == 1 and usages[0].completion_tokens == 6 and usages[0].total_tokens == 9


def test_stream_bytes_are_server_sent_events(serve: Any) -> None:
    url = serve(m=ScriptedBackend(("x",)))
    with httpx.stream(
        "POST", f"{url}/v1/completions", json={"model": "m", "prompt": "p", "stream": True}
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert [c["choices"][0]["text"] for c in chunks] == ["x", ""]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "usage" not in chunks[0] or chunks[0]["usage"] is None


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    error: dict[str, Any] = body["error"]
    return error


def test_unknown_model_is_404_in_openai_shape(serve: Any) -> None:
    url = serve(m=ScriptedBackend())
    with pytest.raises(openai.NotFoundError) as caught:
        client(url).completions.create(model="nope", prompt="x")
    assert caught.value.status_code == 404
    response = httpx.post(
        f"{url}/v1/chat/completions",
        json={"model": "nope", "messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    error = error_of(response)
    assert response.status_code == 404 and error["code"] == "model_not_found"
    assert error["param"] == "model" and "'nope'" in error["message"] and "'m'" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "messages": []}, "messages"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 3},
            "temperature",
        ),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "stop": [""]}, "stop"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        (
            {"model": "m", "messages": [{"role": "user", "content": "x"}], "logprobs": True},
            "logprobs",
        ),
    ],
)
def test_invalid_bodies_are_400_not_422(serve: Any, body: dict[str, Any], param: str) -> None:
    url = serve(m=ScriptedBackend())
    response = httpx.post(f"{url}/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param in error["message"]


def test_invalid_json_and_unknown_routes(serve: Any) -> None:
    url = serve(m=ScriptedBackend())
    response = httpx.post(
        f"{url}/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and "JSON" in error_of(response)["message"]
    with pytest.raises(openai.BadRequestError):
        client(url).completions.create(model="m", prompt=["a", "b"])
    response = httpx.get(f"{url}/v1/nothing")
    assert response.status_code == 404 and error_of(response)["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (EngineOverloadedError("3 requests waiting"), 503, "overloaded"),
        (BackPressureError("queue full"), 503, "overloaded"),
        (
            ContextLengthExceededError(prompt_tokens=9, max_tokens=None, context_length=8),
            400,
            "context_length_exceeded",
        ),
        (
            RemoteError(
                "ContextLengthExceededError",
                "too long",
                "tb",
                ContextLengthExceededError(prompt_tokens=9, max_tokens=None, context_length=8),
            ),
            400,
            "context_length_exceeded",
        ),
        (RuntimeError("boom"), 500, None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_engine_errors_map_to_status(
    serve: Any, error: BaseException, status: int, code: str | None, stream: bool
) -> None:
    url = serve(m=ScriptedBackend(raise_before=error))
    response = httpx.post(
        f"{url}/v1/completions", json={"model": "m", "prompt": "x", "stream": stream}
    )
    assert response.status_code == status
    assert error_of(response)["code"] == code
    if status == 503:
        assert response.headers["retry-after"] == "1"


def test_error_after_the_stream_began_is_an_error_event(serve: Any) -> None:
    url = serve(m=ScriptedBackend(("a", "b"), raise_after_first=RuntimeError("engine died")))
    with httpx.stream(
        "POST", f"{url}/v1/completions", json={"model": "m", "prompt": "x", "stream": True}
    ) as response:
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert "engine died" in json.loads(events[-3].removeprefix("data: "))["error"]["message"]
    stream = client(url).completions.create(model="m", prompt="x", stream=True)
    with pytest.raises(openai.APIError, match="engine died"):
        for _ in stream:
            pass


def test_stream_client_disconnect_closes_the_backend_stream(serve: Any) -> None:
    backend = ScriptedBackend(("a", "b"), hang_after_first=True)
    url = serve(m=backend)
    with httpx.stream(
        "POST", f"{url}/v1/completions", json={"model": "m", "prompt": "x", "stream": True}
    ) as response:
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    assert backend.closed.wait(DEADLINE_S), "the backend's stream was not closed"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("hang", ["before_first", "after_first"])
def test_client_leaving_before_an_answer_closes_the_backend_stream(
    serve: Any, stream: bool, hang: str
) -> None:
    backend = ScriptedBackend(
        ("a", "b"),
        hang_before_first=hang == "before_first",
        hang_after_first=hang == "after_first",
    )
    url = serve(m=backend)
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "prompt": "x", "stream": stream}).encode()
    with socket.create_connection((host, int(port)), timeout=DEADLINE_S) as conn:
        conn.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        # Once the backend has the request, go away without reading an answer.
        assert backend.started.wait(DEADLINE_S), "the request never reached the backend"
    assert backend.closed.wait(DEADLINE_S), "the backend's generation was not stopped"
