"""Inference engines: one file per engine, each behind the interface in ``base.py``."""

from __future__ import annotations

from collections.abc import Callable

from swell.llm.config import LLMConfig
from swell.llm.engines.base import (
    ChatTurn,
    GenerationChunk,
    GenerationRequest,
    LLMBackend,
    LLMEngine,
    RequestDone,
)

__all__ = [
    "ChatTurn",
    "GenerationChunk",
    "GenerationRequest",
    "LLMBackend",
    "LLMEngine",
    "RequestDone",
    "create_engine",
]


def create_engine(
    config: LLMConfig, *, on_request_done: Callable[[RequestDone], None] | None = None
) -> LLMEngine:
    """The engine that serves ``config``'s model (not started: ``await engine.start()``).

    ``on_request_done`` is told how each request ended once the engine stopped working on it
    (llama.cpp calls it from its worker thread, vLLM from the event loop).
    """
    if config.engine_name == "llama_cpp":
        from swell.llm.engines.llama_cpp import LlamaCppEngine

        return LlamaCppEngine(
            config.model_source,
            model_id=config.model_id,
            engine_kwargs=config.engine_kwargs,
            on_request_done=on_request_done,
        )
    from swell.llm.engines.vllm import VLLMEngine

    return VLLMEngine(
        config.model_source,
        model_id=config.model_id,
        engine_kwargs=config.engine_kwargs,
        on_request_done=on_request_done,
    )
