"""The CPU engine: llama.cpp (through llama-cpp-python) serving one GGUF model.

llama.cpp generates one sequence at a time and blocks while it does, so the engine owns one
worker thread that loads the model and runs the requests in turn, in the order they came.
Tokens travel back to the event loop as they are produced (``call_soon_threadsafe`` into an
``asyncio.Queue`` per request), so the loop is never blocked. A request whose consumer goes
away (the iterator is closed, or its task cancelled) is flagged; the worker checks the flag
between tokens and moves on to the next request.

Prompts are tokenized, and chat templates rendered, in the loop's default executor, so that a
prompt too long for the context is refused at once rather than after the queue.
"""

from __future__ import annotations

import asyncio
import codecs
import collections
import dataclasses
import logging
import queue
import threading
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any, Literal

from swell.llm.engines.base import (
    ChatTurn,
    DoneReason,
    FinishReason,
    GenerationChunk,
    GenerationRequest,
    LLMEngine,
    RequestDone,
    check_context,
)
from swell.llm.errors import EngineOverloadedError, InvalidRequestError, LLMError

__all__ = ["LlamaCppEngine", "RequestDone", "StopStringMatcher"]

logger = logging.getLogger(__name__)

# llama-cpp-python's own default (512) is too small for chat; the model's training context
# (n_ctx=0) can be huge and its KV cache with it. Set engine_kwargs["n_ctx"] to change it.
DEFAULT_N_CTX = 4096
# How long shutdown() waits for the worker to finish the token it is computing.
SHUTDOWN_TIMEOUT_S = 30.0
_RANDOM_SEED = 0xFFFFFFFF  # LLAMA_DEFAULT_SEED: llama.cpp picks a random seed


class StopStringMatcher:
    """Turns the bytes of generated tokens into text, cut before the first stop string.

    Text that could be the start of a stop string is held back until it is known not to be;
    bytes that end inside a UTF-8 character wait for the rest of it.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        """The text that may be sent now, and whether a stop string was met (ends the text)."""
        self._pending += self._decoder.decode(data)
        cut = self._find_stop()
        if cut is not None:
            text, self._pending = self._pending[:cut], ""
            return text, True
        hold = self._held_back_length()
        keep = len(self._pending) - hold
        text, self._pending = self._pending[:keep], self._pending[keep:]
        return text, False

    def flush(self) -> str:
        """The rest of the text once generation ended for another reason."""
        self._pending += self._decoder.decode(b"", final=True)
        cut = self._find_stop()
        text = self._pending if cut is None else self._pending[:cut]
        self._pending = ""
        return text

    def _find_stop(self) -> int | None:
        found = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        return min(found) if found else None

    def _held_back_length(self) -> int:
        """The longest end of the pending text that begins some stop string."""
        longest = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(s[:k]):
                    longest = k
                    break
        return longest


@dataclasses.dataclass(slots=True)
class _Job:
    request: GenerationRequest
    prompt_tokens: list[int]
    max_tokens: int
    emit: Callable[[GenerationChunk | BaseException], None]
    cancelled: threading.Event = dataclasses.field(default_factory=threading.Event)


class LlamaCppEngine(LLMEngine):
    """One GGUF model on llama.cpp; concurrent requests are served one after another.

    ``engine_kwargs`` go to ``llama_cpp.Llama`` (``n_ctx``, ``n_threads``, ``n_batch``, ...),
    except ``chat_template``: a Jinja template used instead of the one in the GGUF file.
    ``max_queued_requests`` bounds the requests waiting for the worker (None: unbounded);
    past it, ``generate`` raises EngineOverloadedError. ``on_request_done`` is called from the
    worker thread when a request ends, however it ended (for metrics and logs).
    """

    def __init__(
        self,
        model_path: str,
        *,
        model_id: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        max_queued_requests: int | None = None,
        on_request_done: Callable[[RequestDone], None] | None = None,
    ) -> None:
        kwargs = dict(engine_kwargs or {})
        if "model_path" in kwargs:
            raise InvalidRequestError(
                "engine_kwargs must not contain model_path; the model is "
                "model_loading_config.model_source"
            )
        self._chat_template: str | None = kwargs.pop("chat_template", None)
        kwargs.setdefault("n_ctx", DEFAULT_N_CTX)
        kwargs.setdefault("verbose", False)
        self._llama_kwargs = kwargs
        self.model_path = model_path
        self.model_id = model_id or model_path
        self._max_queued = max_queued_requests
        self._on_request_done = on_request_done

        self._llm: Any = None  # llama_cpp.Llama, once loaded
        self._formatter: Any = None  # llama_chat_format.Jinja2ChatFormatter, if any
        self._is_eog: Callable[[int], bool] = lambda token: False
        self._context_length = 0
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._current: _Job | None = None
        self._waiting = 0  # submitted, not yet finished (read and written on the loop only)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._state: Literal["new", "starting", "running", "stopped"] = "new"

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        if self._state != "new":
            raise RuntimeError(f"Cannot start a LlamaCppEngine that is {self._state}")
        self._state = "starting"
        loop = asyncio.get_running_loop()
        loaded: asyncio.Future[None] = loop.create_future()

        def report(error: BaseException | None) -> None:
            def settle() -> None:
                if loaded.done():
                    return
                if error is None:
                    loaded.set_result(None)
                else:
                    loaded.set_exception(error)

            loop.call_soon_threadsafe(settle)

        self._thread = threading.Thread(
            target=self._worker_main,
            args=(report,),
            name=f"swell-llama-cpp[{self.model_id}]",
            daemon=True,
        )
        self._thread.start()
        try:
            await loaded
        except BaseException:
            self._state = "stopped"
            raise
        self._state = "running"

    async def shutdown(self) -> None:
        if self._state in ("new", "stopped"):
            self._state = "stopped"
            return
        self._state = "stopped"
        self._stopping.set()
        current = self._current
        if current is not None:
            current.cancelled.set()
        self._jobs.put(None)
        thread = self._thread
        if thread is not None:
            await asyncio.to_thread(thread.join, SHUTDOWN_TIMEOUT_S)
            if thread.is_alive():
                logger.error(
                    "llama.cpp worker for %s did not stop within %.0f s",
                    self.model_id,
                    SHUTDOWN_TIMEOUT_S,
                )

    # -- the LLMEngine interface ---------------------------------------------------------------

    @property
    def context_length(self) -> int:
        self._check_running()
        return self._context_length

    def count_tokens(self, prompt: str, *, add_special_tokens: bool = True) -> int:
        return len(self._tokenize(prompt, add_special_tokens=add_special_tokens))

    def apply_chat_template(self, messages: Sequence[ChatTurn]) -> str:
        self._check_running()
        if self._formatter is None:
            raise InvalidRequestError(
                f"model {self.model_id!r} has no chat template (its GGUF file carries none); "
                f"use /v1/completions, or set engine_kwargs['chat_template'] to a Jinja template",
                param="messages",
            )
        try:
            result = self._formatter(
                messages=[{"role": m.role, "content": m.content} for m in messages]
            )
        except ValueError as error:  # raise_exception() inside the template
            raise InvalidRequestError(
                f"the chat template rejected the messages: {error}", param="messages"
            ) from None
        prompt: str = result.prompt
        return prompt

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self._check_running()
        if self._max_queued is not None and self._waiting > self._max_queued:
            raise EngineOverloadedError(
                f"model {self.model_id!r} has {self._waiting - 1} requests waiting, the most it "
                f"accepts (max_queued_requests={self._max_queued}); retry later"
            )
        self._waiting += 1
        job: _Job | None = None
        try:
            prompt_tokens = await asyncio.to_thread(self._prepare, request)
            check_context(
                prompt_tokens=len(prompt_tokens),
                max_tokens=request.max_tokens,
                context_length=self._context_length,
                is_chat=request.is_chat,
            )
            max_tokens = request.max_tokens or self._context_length - len(prompt_tokens)
            self._check_running()

            loop = asyncio.get_running_loop()
            chunks: asyncio.Queue[GenerationChunk | BaseException] = asyncio.Queue()

            def emit(item: GenerationChunk | BaseException) -> None:
                try:
                    loop.call_soon_threadsafe(chunks.put_nowait, item)
                except RuntimeError:  # the loop is closed: nobody is listening any more
                    assert job is not None
                    job.cancelled.set()

            job = _Job(request, prompt_tokens, max_tokens, emit)
            self._jobs.put(job)
            while True:
                item = await chunks.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            # Runs on normal end, on error, on aclose() and on cancellation alike.
            self._waiting -= 1
            if job is not None:
                job.cancelled.set()

    # -- on the loop's executor ------------------------------------------------------------------

    def _check_running(self) -> None:
        if self._state != "running":
            raise RuntimeError(
                f"LlamaCppEngine for {self.model_id!r} is {self._state}; await engine.start() first"
                if self._state in ("new", "starting")
                else f"LlamaCppEngine for {self.model_id!r} is stopped"
            )

    def _tokenize(self, text: str, *, add_special_tokens: bool) -> list[int]:
        # llama_tokenize only reads the vocabulary, so it may run beside the worker's decoding.
        self._check_running()
        tokens: list[int] = self._llm.tokenize(
            text.encode("utf-8"), add_bos=add_special_tokens, special=True
        )
        return tokens

    def _prepare(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            # The template writes the special tokens (BOS included) itself.
            prompt = self.apply_chat_template(request.messages)
            return self._tokenize(prompt, add_special_tokens=False)
        assert request.prompt is not None
        return self._tokenize(request.prompt, add_special_tokens=True)

    # -- on the worker thread ------------------------------------------------------------------

    def _worker_main(self, report: Callable[[BaseException | None], None]) -> None:
        try:
            self._load()
        except BaseException as error:
            report(error)
            return
        report(None)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                if self._stopping.is_set():
                    job.emit(self._stopped_error())
                    self._done(job, "cancelled", 0)
                    continue
                if job.cancelled.is_set():
                    self._done(job, "cancelled", 0)
                    continue
                self._current = job
                try:
                    self._run(job)
                except Exception as error:
                    logger.exception("llama.cpp failed on request %s", job.request.request_id)
                    job.emit(LLMError(f"generation failed: {type(error).__name__}: {error}"))
                    self._done(job, "error", 0)
                finally:
                    self._current = None
        finally:
            self._drain_queue()
            self._llm.close()

    def _load(self) -> None:
        import llama_cpp
        from llama_cpp import llama_chat_format

        llm = llama_cpp.Llama(model_path=self.model_path, **self._llama_kwargs)
        self._llm = llm
        self._context_length = int(llm.n_ctx())
        vocab = llm._model.vocab  # the C vocabulary; llama-cpp-python reads it the same way
        self._is_eog = lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
        template = self._chat_template or llm.metadata.get("tokenizer.chat_template")
        if template:

            def token_text(token: int) -> str:
                if token < 0:
                    return ""
                return bytes(llm.detokenize([token], special=True)).decode("utf-8", "replace")

            self._formatter = llama_chat_format.Jinja2ChatFormatter(
                template=template,
                eos_token=token_text(llm.token_eos()),
                bos_token=token_text(llm.token_bos()),
                add_generation_prompt=True,
            )

    def _run(self, job: _Job) -> None:
        request = job.request
        llm = self._llm
        if request.seed is not None:
            # Evaluate the whole prompt again rather than reuse the cached prefix from the
            # previous request: the same seed must give the same text whatever ran before.
            llm.reset()
            llm.set_seed(request.seed % _RANDOM_SEED)
        else:
            llm.set_seed(_RANDOM_SEED)
        matcher = StopStringMatcher(request.stop)
        prompt_tokens = len(job.prompt_tokens)
        generated = 0
        finish: FinishReason = "length"
        tokens = llm.generate(
            job.prompt_tokens,
            temp=request.temperature,
            top_p=request.top_p,
            top_k=0,  # OpenAI's sampling has no top-k and no min-p
            min_p=0.0,
            typical_p=1.0,
            repeat_penalty=1.0,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
        )
        try:
            for token in tokens:
                if job.cancelled.is_set():
                    # The consumer went away (then nobody reads this), or the engine stops.
                    job.emit(self._stopped_error())
                    self._done(job, "cancelled", generated)
                    return
                if self._is_eog(token):
                    finish = "stop"
                    break
                generated += 1
                text, stopped = matcher.feed(bytes(llm.detokenize([token])))
                if stopped:
                    job.emit(GenerationChunk(text, prompt_tokens, generated, "stop"))
                    self._done(job, "stop", generated)
                    return
                if generated >= job.max_tokens:
                    break
                if text:
                    job.emit(GenerationChunk(text, prompt_tokens, generated))
        finally:
            tokens.close()
        job.emit(GenerationChunk(matcher.flush(), prompt_tokens, generated, finish))
        self._done(job, finish, generated)

    def _done(self, job: _Job, reason: DoneReason, completion_tokens: int) -> None:
        if self._on_request_done is None:
            return
        try:
            self._on_request_done(
                RequestDone(
                    job.request.request_id, reason, len(job.prompt_tokens), completion_tokens
                )
            )
        except Exception:
            logger.exception("on_request_done raised")

    def _stopped_error(self) -> LLMError:
        return LLMError(f"the engine for model {self.model_id!r} stopped before the request ended")

    def _drain_queue(self) -> None:
        """Fail the requests still queued when the worker stops."""
        leftovers: collections.deque[_Job] = collections.deque()
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job)
        for job in leftovers:
            job.emit(self._stopped_error())
            self._done(job, "cancelled", 0)
