"""LLM serving: OpenAI's API over llama.cpp (CPU, GGUF files) and vLLM (GPU).

The names follow Ray Serve LLM: ``LLMConfig``, ``ModelLoadingConfig``. Neither engine is
imported here; each is imported when a model that needs it is started.
"""

from swell.llm.config import LLMConfig, ModelLoadingConfig, validate_llm_config
from swell.llm.engines import (
    ChatTurn,
    GenerationChunk,
    GenerationRequest,
    LLMBackend,
    LLMEngine,
    create_engine,
)
from swell.llm.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
)
from swell.llm.openai_app import build_openai_router

__all__ = [
    "ChatTurn",
    "ContextLengthExceededError",
    "EngineOverloadedError",
    "GenerationChunk",
    "GenerationRequest",
    "InvalidRequestError",
    "LLMBackend",
    "LLMConfig",
    "LLMEngine",
    "LLMError",
    "ModelLoadingConfig",
    "ModelNotFoundError",
    "build_openai_router",
    "create_engine",
    "validate_llm_config",
]
