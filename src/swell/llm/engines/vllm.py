"""The GPU engine: vLLM's AsyncLLMEngine, which batches concurrent requests continuously.

``vllm`` is imported in :meth:`VLLMEngine.start`, never when this module is imported, so that
swell works where vLLM is not installed. ``engine_kwargs`` are vLLM's ``AsyncEngineArgs``
(``tensor_parallel_size``, ``max_model_len``, ``gpu_memory_utilization``, ``dtype``, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from typing import Any

from swell.llm.engines.base import (
    ChatTurn,
    DoneReason,
    GenerationChunk,
    GenerationRequest,
    LLMEngine,
    RequestDone,
    check_context,
)
from swell.llm.errors import InvalidRequestError, LLMError

logger = logging.getLogger(__name__)


class VLLMEngine(LLMEngine):
    """One model (a Hugging Face repository id or a local directory) on vLLM.

    ``on_request_done`` is called on the event loop when a request ends, however it ended:
    after vLLM has aborted it, for one that was cancelled (for metrics and logs).
    """

    def __init__(
        self,
        model_source: str,
        *,
        model_id: str | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        on_request_done: Callable[[RequestDone], None] | None = None,
    ) -> None:
        kwargs = dict(engine_kwargs or {})
        if "model" in kwargs:
            raise InvalidRequestError(
                "engine_kwargs must not contain 'model'; the model is "
                "model_loading_config.model_source"
            )
        self.model_source = model_source
        self.model_id = model_id or model_source
        self._engine_kwargs = kwargs
        self._on_request_done = on_request_done
        self._engine: Any = None  # vllm.AsyncLLMEngine
        self._tokenizer: Any = None  # the Hugging Face tokenizer vLLM loaded
        self._context_length = 0
        self._sampling_params: Any = None  # the vllm.SamplingParams class
        self._delta_kind: Any = None  # vllm.sampling_params.RequestOutputKind.DELTA

    async def start(self) -> None:
        if self._engine is not None:
            raise RuntimeError("Cannot start a VLLMEngine twice")
        try:
            import vllm
            from vllm.sampling_params import RequestOutputKind
        except ImportError as error:
            raise ImportError(
                f"model {self.model_id!r} is served by vLLM, which is not installed: "
                f"pip install 'swell[vllm]' (needs a CUDA GPU)"
            ) from error

        args = vllm.AsyncEngineArgs(model=self.model_source, **self._engine_kwargs)
        # Builds the engine core process and loads the weights: blocking, for minutes.
        engine = await asyncio.to_thread(vllm.AsyncLLMEngine.from_engine_args, args)
        tokenizer = engine.get_tokenizer()
        if inspect.isawaitable(tokenizer):  # an async method before vLLM 0.11
            tokenizer = await tokenizer
        model_config = getattr(engine, "model_config", None)
        if model_config is None:
            model_config = await engine.get_model_config()
        self._engine = engine
        self._tokenizer = tokenizer
        self._context_length = int(model_config.max_model_len)
        self._sampling_params = vllm.SamplingParams
        self._delta_kind = RequestOutputKind.DELTA

    async def shutdown(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.shutdown()

    @property
    def context_length(self) -> int:
        self._check_running()
        return self._context_length

    def count_tokens(self, prompt: str, *, add_special_tokens: bool = True) -> int:
        return len(self._encode(prompt, add_special_tokens=add_special_tokens))

    def apply_chat_template(self, messages: Sequence[ChatTurn]) -> str:
        self._check_running()
        if getattr(self._tokenizer, "chat_template", None) is None:
            raise InvalidRequestError(
                f"model {self.model_id!r} has no chat template; use /v1/completions",
                param="messages",
            )
        prompt: str = self._tokenizer.apply_chat_template(
            [{"role": m.role, "content": m.content} for m in messages],
            tokenize=False,
            add_generation_prompt=True,
        )
        return prompt

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[GenerationChunk, None]:
        self._check_running()
        prompt_ids = await asyncio.to_thread(self._prepare, request)
        check_context(
            prompt_tokens=len(prompt_ids),
            max_tokens=request.max_tokens,
            context_length=self._context_length,
            is_chat=request.is_chat,
        )
        params = self._sampling_params(
            n=1,
            max_tokens=request.max_tokens or self._context_length - len(prompt_ids),
            temperature=request.temperature,
            top_p=request.top_p,
            stop=list(request.stop),
            seed=request.seed,
            presence_penalty=request.presence_penalty,
            frequency_penalty=request.frequency_penalty,
            output_kind=self._delta_kind,
        )
        completion_tokens = 0
        reason: DoneReason = "cancelled"
        # Closing or cancelling this generator closes vLLM's, which aborts the request.
        outputs = self._engine.generate(
            {"prompt_token_ids": prompt_ids}, params, request_id=request.request_id
        )
        try:
            async for output in outputs:
                completion = output.outputs[0]
                completion_tokens += len(completion.token_ids)
                finish = completion.finish_reason
                if finish is not None and finish not in ("stop", "length"):
                    raise LLMError(f"vLLM ended the request with finish_reason {finish!r}")
                if finish is not None:
                    reason = finish
                yield GenerationChunk(completion.text, len(prompt_ids), completion_tokens, finish)
                if finish is not None:
                    return
        except Exception:
            reason = "error"
            raise
        finally:
            await outputs.aclose()
            self._done(request, reason, len(prompt_ids), completion_tokens)

    def _done(
        self, request: GenerationRequest, reason: DoneReason, prompt: int, completion: int
    ) -> None:
        if self._on_request_done is None:
            return
        try:
            self._on_request_done(RequestDone(request.request_id, reason, prompt, completion))
        except Exception:
            logger.exception("on_request_done raised")

    def _check_running(self) -> None:
        if self._engine is None:
            raise RuntimeError(
                f"VLLMEngine for {self.model_id!r} is not running; await engine.start() first"
            )

    def _encode(self, text: str, *, add_special_tokens: bool) -> list[int]:
        self._check_running()
        ids: list[int] = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return ids

    def _prepare(self, request: GenerationRequest) -> list[int]:
        if request.messages is not None:
            # The chat template writes the special tokens itself (vLLM's server does the same).
            prompt = self.apply_chat_template(request.messages)
            return self._encode(prompt, add_special_tokens=False)
        assert request.prompt is not None
        return self._encode(request.prompt, add_special_tokens=True)
