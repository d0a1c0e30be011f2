"""OpenAI's HTTP API (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``) over engines.

:func:`build_openai_router` makes a FastAPI app that routes each request, by its ``model``, to
an :class:`~swell.llm.engines.base.LLMBackend`: an engine in this process, or a proxy for one
in another replica. Streams are server-sent events (``data: {json}`` per chunk, then
``data: [DONE]``). Errors have OpenAI's shape, ``{"error": {"message", "type", "param",
"code"}}``: an unknown model is a 404, an invalid body or a prompt too long for the context a
400, an overloaded engine a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from swell.exceptions import BackPressureError, RemoteError
from swell.llm.engines.base import ChatTurn, GenerationChunk, GenerationRequest, LLMBackend
from swell.llm.errors import LLMError, ModelNotFoundError
from swell.llm.protocol import (
    ChatCompletionChoice,
    ChatCompletionMessage,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatCompletionStreamChoice,
    ChatCompletionStreamResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    CompletionStreamResponse,
    DeltaMessage,
    ErrorResponse,
    ModelCard,
    ModelList,
    UsageInfo,
    random_id,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_DONE = b"data: [DONE]\n\n"


def build_openai_router(models: Mapping[str, LLMBackend]) -> FastAPI:
    """A FastAPI app serving OpenAI's API for ``models``: model id → backend that generates.

    The backends must already be started; the app neither starts nor stops them.
    """
    backends = dict(models)
    for model_id, backend in backends.items():
        if not callable(getattr(backend, "generate", None)):
            raise TypeError(
                f"models[{model_id!r}] is a {type(backend).__name__}, which has no generate() "
                f"method; give an LLMEngine or another LLMBackend"
            )
    created = int(time.time())

    app = FastAPI(title="swell OpenAI-compatible API", docs_url=None, redoc_url=None)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    for error_type in (LLMError, BackPressureError, RemoteError, _ClientDisconnected, Exception):
        app.add_exception_handler(error_type, _any_error)

    def backend_for(model: str) -> LLMBackend:
        try:
            return backends[model]
        except KeyError:
            served = ", ".join(repr(m) for m in backends) or "none"
            raise ModelNotFoundError(
                f"The model {model!r} does not exist. Models served here: {served}.",
                param="model",
            ) from None

    @app.get("/v1/models")
    async def list_models() -> Response:
        cards = [ModelCard(id=model_id, created=created) for model_id in backends]
        return _json(ModelList(data=cards))

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Response:
        backend_for(model_id)
        return _json(ModelCard(id=model_id, created=created))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        backend = backend_for(body.model)
        requests = _generation_requests(body, random_id("cmpl"), prompt=body.prompt_text)
        if body.stream:
            streams = await _open_streams(request, backend, requests)
            return _SSEResponse(_completion_events(body, requests[0].request_id, streams))
        results = await _until_disconnected(
            request, _gather(_collect(backend.generate(r)) for r in requests)
        )
        echo = body.prompt_text if body.echo else ""
        return _json(
            CompletionResponse(
                id=requests[0].request_id,
                model=body.model,
                choices=[
                    CompletionChoice(index=i, text=echo + r.text, finish_reason=r.finish_reason)
                    for i, r in enumerate(results)
                ],
                usage=_usage(results),
            )
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        backend = backend_for(body.model)
        messages = tuple(ChatTurn(m["role"], m["content"]) for m in body.message_dicts())
        requests = _generation_requests(body, random_id("chatcmpl"), messages=messages)
        if body.stream:
            streams = await _open_streams(request, backend, requests)
            return _SSEResponse(_chat_events(body, requests[0].request_id, streams))
        results = await _until_disconnected(
            request, _gather(_collect(backend.generate(r)) for r in requests)
        )
        return _json(
            ChatCompletionResponse(
                id=requests[0].request_id,
                model=body.model,
                choices=[
                    ChatCompletionChoice(
                        index=i,
                        message=ChatCompletionMessage(content=r.text),
                        finish_reason=r.finish_reason,
                    )
                    for i, r in enumerate(results)
                ],
                usage=_usage(results),
            )
        )

    return app


# -- requests --------------------------------------------------------------------------------


def _generation_requests(
    body: CompletionRequest | ChatCompletionRequest,
    request_id: str,
    *,
    prompt: str | None = None,
    messages: tuple[ChatTurn, ...] | None = None,
) -> list[GenerationRequest]:
    """One GenerationRequest per choice asked for (``n``); choice i samples with seed + i."""
    max_tokens = body.max_new_tokens if isinstance(body, ChatCompletionRequest) else body.max_tokens
    return [
        GenerationRequest(
            request_id=request_id if i == 0 else f"{request_id}-{i}",
            prompt=prompt,
            messages=messages,
            max_tokens=max_tokens,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            stop=tuple(body.stop_list),
            seed=None if body.seed is None else body.seed + i,
            presence_penalty=body.presence_penalty or 0.0,
            frequency_penalty=body.frequency_penalty or 0.0,
        )
        for i in range(body.n)
    ]


@dataclasses.dataclass(slots=True)
class _Result:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Any


async def _collect(stream: AsyncIterator[GenerationChunk]) -> _Result:
    parts: list[str] = []
    last: GenerationChunk | None = None
    async with _closing(stream):
        async for chunk in stream:
            parts.append(chunk.text)
            last = chunk
    if last is None or last.finish_reason is None:
        raise LLMError("the engine ended the generation without a finish_reason")
    return _Result("".join(parts), last.prompt_tokens, last.completion_tokens, last.finish_reason)


def _usage(results: Iterable[_Result]) -> UsageInfo:
    results = list(results)
    # The prompt is counted once however many choices were asked for, as OpenAI does.
    return UsageInfo.of(results[0].prompt_tokens, sum(r.completion_tokens for r in results))


async def _gather(coros: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run concurrently; the first error cancels the others and is raised as it is."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _until_disconnected(request: Request, work: Awaitable[T]) -> T:
    """``await work``, cancelling it if the client goes away first (then the engine stops)."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_wait_for_disconnect(request.receive))
    try:
        await asyncio.wait({work_task, watch_task}, return_when=asyncio.FIRST_COMPLETED)
        if work_task.done():
            return work_task.result()
        raise _ClientDisconnected
    finally:
        for task in (work_task, watch_task):
            task.cancel()
        await asyncio.gather(work_task, watch_task, return_exceptions=True)


async def _wait_for_disconnect(receive: Receive) -> None:
    """Returns when the client goes away. Called once the body has been read: by the ASGI
    spec, ``receive()`` then blocks until the disconnect. A server that answers anything else
    cannot tell us, and then this waits until cancelled rather than spin."""
    if (await receive())["type"] != "http.disconnect":
        await asyncio.Event().wait()


class _ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready."""


# -- streams ---------------------------------------------------------------------------------

_Indexed = tuple[int, GenerationChunk]


async def _open_streams(
    request: Request, backend: LLMBackend, requests: list[GenerationRequest]
) -> AsyncIterator[_Indexed]:
    """The choices' chunks, merged; the first is awaited here, so that a request that cannot
    be served (too long, overloaded) is an HTTP error, not a broken stream. A client that
    leaves while its request waits for the engine cancels it there."""
    streams = [backend.generate(r) for r in requests]
    merged: AsyncGenerator[_Indexed] = _merge(streams) if len(streams) > 1 else _indexed(streams[0])
    try:
        first = await _until_disconnected(request, anext(merged))
    except BaseException:
        await merged.aclose()
        raise
    return _prepend(first, merged)


async def _indexed(stream: AsyncIterator[GenerationChunk]) -> AsyncGenerator[_Indexed]:
    async with _closing(stream):
        async for chunk in stream:
            yield 0, chunk


async def _merge(streams: list[AsyncIterator[GenerationChunk]]) -> AsyncGenerator[_Indexed]:
    """Chunks from several streams as they come, each with its stream's index."""
    queue: asyncio.Queue[_Indexed | BaseException | None] = asyncio.Queue()

    async def pump(index: int, stream: AsyncIterator[GenerationChunk]) -> None:
        try:
            async with _closing(stream):
                async for chunk in stream:
                    queue.put_nowait((index, chunk))
            queue.put_nowait(None)
        except Exception as error:
            queue.put_nowait(error)

    tasks = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(streams)]
    try:
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _prepend(first: _Indexed, rest: AsyncIterator[_Indexed]) -> AsyncIterator[_Indexed]:
    async with _closing(rest):
        yield first
        async for item in rest:
            yield item


async def _completion_events(
    body: CompletionRequest, request_id: str, chunks: AsyncIterator[_Indexed]
) -> AsyncIterator[bytes]:
    created = int(time.time())

    def event(index: int, text: str, finish: Any = None) -> bytes:
        return _sse(
            CompletionStreamResponse(
                id=request_id,
                created=created,
                model=body.model,
                choices=[CompletionChoice(index=index, text=text, finish_reason=finish)],
            )
        )

    usage: dict[int, GenerationChunk] = {}
    async with _closing(chunks):
        try:
            if body.echo:
                for index in range(body.n):
                    yield event(index, body.prompt_text)
            async for index, chunk in chunks:
                if chunk.text:
                    yield event(index, chunk.text)
                if chunk.finish_reason is not None:
                    usage[index] = chunk
                    yield event(index, "", chunk.finish_reason)
            if body.include_usage:
                yield _sse(
                    CompletionStreamResponse(
                        id=request_id,
                        created=created,
                        model=body.model,
                        choices=[],
                        usage=_stream_usage(usage),
                    )
                )
        except Exception as error:
            yield _sse_error(error)
        yield _DONE


async def _chat_events(
    body: ChatCompletionRequest, request_id: str, chunks: AsyncIterator[_Indexed]
) -> AsyncIterator[bytes]:
    created = int(time.time())

    def event(index: int, delta: DeltaMessage, finish: Any = None) -> bytes:
        return _sse(
            ChatCompletionStreamResponse(
                id=request_id,
                created=created,
                model=body.model,
                choices=[
                    ChatCompletionStreamChoice(index=index, delta=delta, finish_reason=finish)
                ],
            )
        )

    usage: dict[int, GenerationChunk] = {}
    async with _closing(chunks):
        try:
            for index in range(body.n):
                yield event(index, DeltaMessage(role="assistant", content=""))
            async for index, chunk in chunks:
                if chunk.text:
                    yield event(index, DeltaMessage(content=chunk.text))
                if chunk.finish_reason is not None:
                    usage[index] = chunk
                    yield event(index, DeltaMessage(), chunk.finish_reason)
            if body.include_usage:
                yield _sse(
                    ChatCompletionStreamResponse(
                        id=request_id,
                        created=created,
                        model=body.model,
                        choices=[],
                        usage=_stream_usage(usage),
                    )
                )
        except Exception as error:
            yield _sse_error(error)
        yield _DONE


def _stream_usage(last_chunks: dict[int, GenerationChunk]) -> UsageInfo:
    chunks = list(last_chunks.values())
    prompt = chunks[0].prompt_tokens if chunks else 0
    return UsageInfo.of(prompt, sum(c.completion_tokens for c in chunks))


def _sse(model: BaseModel) -> bytes:
    return b"data: " + model.model_dump_json().encode() + b"\n\n"


def _sse_error(error: Exception) -> bytes:
    """An error after the stream began: sent as an event, as vLLM and OpenAI do."""
    status, payload = _error_payload(error)
    if status >= 500:
        logger.error("stream failed: %r", error, exc_info=error)
    return b"data: " + payload.model_dump_json().encode() + b"\n\n"


class _SSEResponse(StreamingResponse):
    """A text/event-stream response that always closes its stream, however it ends: a client
    that goes away must stop the generation now, not when the generator is collected."""

    def __init__(self, events: AsyncIterator[bytes]) -> None:
        super().__init__(events, media_type="text/event-stream", headers=_SSE_HEADERS)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            aclose: Callable[[], Awaitable[None]] | None = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[Any]) -> AsyncIterator[None]:
    """Close an async generator on the way out (``contextlib.aclosing`` for any iterator)."""
    try:
        yield
    finally:
        aclose: Callable[[], Awaitable[None]] | None = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


# -- errors ----------------------------------------------------------------------------------


def _json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def _error_payload(error: BaseException) -> tuple[int, ErrorResponse]:
    if isinstance(error, RemoteError) and isinstance(error.cause, LLMError):
        error = error.cause  # an engine's error, raised in another replica
    if isinstance(error, LLMError):
        return error.status_code, ErrorResponse.of(
            error.message, error.error_type, error.param, error.code
        )
    if isinstance(error, BackPressureError):
        return 503, ErrorResponse.of(
            f"The server is overloaded: {error}. Retry later.",
            "service_unavailable_error",
            code="overloaded",
        )
    return 500, ErrorResponse.of(
        f"The server failed to answer: {type(error).__name__}: {error}", "internal_server_error"
    )


def _error_response(error: Exception) -> Response:
    if isinstance(error, _ClientDisconnected):
        return Response(status_code=499)  # nobody reads it; nginx's "client closed request"
    status, payload = _error_payload(error)
    if status >= 500 and status != 503:
        logger.error("request failed: %r", error, exc_info=error)
    headers = {"Retry-After": "1"} if status == 503 else None
    return JSONResponse(payload.model_dump(mode="json"), status_code=status, headers=headers)


async def _validation_error(request: Request, error: Exception) -> Response:
    """FastAPI answers an invalid body with 422; OpenAI's API answers 400."""
    assert isinstance(error, RequestValidationError)
    problems = []
    param: str | None = None
    for problem in error.errors():
        loc = [str(part) for part in problem.get("loc", ()) if part != "body"]
        field = ".".join(loc) or "body"
        param = param or (loc[0] if loc else None)
        message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
        if problem.get("type") == "json_invalid":
            message = "the body is not valid JSON"
        problems.append(f"{field}: {message}")
    payload = ErrorResponse.of(
        "Invalid request: " + "; ".join(problems), "invalid_request_error", param
    )
    return JSONResponse(payload.model_dump(mode="json"), status_code=400)


async def _http_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, StarletteHTTPException)
    kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
    payload = ErrorResponse.of(f"{request.method} {request.url.path}: {error.detail}", kind)
    return JSONResponse(
        payload.model_dump(mode="json"), status_code=error.status_code, headers=error.headers
    )


async def _any_error(request: Request, error: Exception) -> Response:
    return _error_response(error)
