"""LLM serving: OpenAI's API over llama.cpp (CPU, GGUF files) and vLLM (GPU).

The names follow Ray Serve LLM: ``LLMConfig``, ``ModelLoadingConfig``, ``LLMServer``,
``LLMRouter`` and the application builder ``build_openai_app``. Neither engine is imported
here; each is imported when a model that needs it is started. FastAPI is imported when the
API is built (``build_openai_router``, or the ingress replica starting), not here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from swell.llm.config import (
    LLMConfig,
    LLMServingArgs,
    ModelLoadingConfig,
    validate_llm_config,
)
from swell.llm.deployments import (
    HandleBackend,
    LLMRouter,
    LLMServer,
    build_llm_deployment,
    build_openai_app,
)
from swell.llm.engines import (
    ChatTurn,
    GenerationChunk,
    GenerationRequest,
    LLMBackend,
    LLMEngine,
    RequestDone,
    create_engine,
)
from swell.llm.errors import (
    ContextLengthExceededError,
    EngineOverloadedError,
    InvalidRequestError,
    LLMError,
    ModelNotFoundError,
)

if TYPE_CHECKING:
    from swell.llm.openai_app import build_openai_router

__all__ = [
    "ChatTurn",
    "ContextLengthExceededError",
    "EngineOverloadedError",
    "GenerationChunk",
    "GenerationRequest",
    "HandleBackend",
    "InvalidRequestError",
    "LLMBackend",
    "LLMConfig",
    "LLMEngine",
    "LLMError",
    "LLMRouter",
    "LLMServer",
    "LLMServingArgs",
    "ModelLoadingConfig",
    "ModelNotFoundError",
    "RequestDone",
    "build_llm_deployment",
    "build_openai_app",
    "build_openai_router",
    "create_engine",
    "validate_llm_config",
]


def __getattr__(name: str) -> Any:
    if name == "build_openai_router":  # imports FastAPI
        from swell.llm.openai_app import build_openai_router

        return build_openai_router
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
