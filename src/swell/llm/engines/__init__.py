"""Inference engines: one file per engine, each behind the interface in ``base.py``."""

from __future__ import annotations

from swell.llm.config import LLMConfig
from swell.llm.engines.base import (
    ChatTurn,
    GenerationChunk,
    GenerationRequest,
    LLMBackend,
    LLMEngine,
)

__all__ = [
    "ChatTurn",
    "GenerationChunk",
    "GenerationRequest",
    "LLMBackend",
    "LLMEngine",
    "create_engine",
]


def create_engine(config: LLMConfig) -> LLMEngine:
    """The engine that serves ``config``'s model (not started: ``await engine.start()``)."""
    if config.engine_name == "llama_cpp":
        from swell.llm.engines.llama_cpp import LlamaCppEngine

        return LlamaCppEngine(
            config.model_source, model_id=config.model_id, engine_kwargs=config.engine_kwargs
        )
    from swell.llm.engines.vllm import VLLMEngine

    return VLLMEngine(
        config.model_source, model_id=config.model_id, engine_kwargs=config.engine_kwargs
    )
