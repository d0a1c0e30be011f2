"""What one served model is: Ray Serve LLM's ``LLMConfig``, with swell's engines.

::

    LLMConfig(
        model_loading_config={"model_id": "smollm2", "model_source": "/models/smollm2.gguf"},
        engine_kwargs={"n_ctx": 4096},
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 4}},
    )

``model_id`` is the name clients send as ``model``; ``model_source`` is where the weights come
from (a ``.gguf`` file for llama.cpp, a Hugging Face repository id or a local directory for
vLLM) and defaults to ``model_id``. ``engine`` is chosen from the source when left out.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from swell.config import describe_validation_error
from swell.exceptions import ConfigError

EngineName = Literal["llama_cpp", "vllm"]


class _Strict(BaseModel):
    """Unknown fields are errors: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class ModelLoadingConfig(_Strict):
    """Which model to serve, and under which name."""

    model_id: str = Field(
        min_length=1, description="The name clients pass as `model` in their requests."
    )
    model_source: str | None = Field(
        default=None,
        min_length=1,
        description=(
            "Where the weights are: a path to a .gguf file (llama.cpp), or a Hugging Face "
            "repository id or local directory (vLLM). Defaults to model_id."
        ),
    )

    @property
    def source(self) -> str:
        """The place the weights are loaded from: model_source, else model_id."""
        return self.model_source if self.model_source is not None else self.model_id


class LLMConfig(_Strict):
    """One model served through the OpenAI-compatible API."""

    model_loading_config: ModelLoadingConfig
    engine: EngineName | None = Field(
        default=None,
        description=(
            "'llama_cpp' (CPU, GGUF files) or 'vllm' (GPU). Left out: llama_cpp when the source "
            "is a path ending in .gguf, else vllm."
        ),
    )
    deployment_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "swell deployment options for the model's replicas (num_replicas, "
            "autoscaling_config, max_ongoing_requests, ...)."
        ),
    )
    engine_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Passed to the engine: llama_cpp.Llama(...) arguments such as n_ctx and n_threads, "
            "or vLLM AsyncEngineArgs such as tensor_parallel_size and max_model_len."
        ),
    )
    accelerator_type: str | None = Field(
        default=None, description="The accelerator the replicas need, e.g. 'H100' (vLLM only)."
    )
    runtime_env: dict[str, Any] | None = Field(
        default=None, description="The replicas' runtime_env (env_vars, working_dir)."
    )

    @property
    def model_id(self) -> str:
        return self.model_loading_config.model_id

    @property
    def model_source(self) -> str:
        """The place the weights are loaded from: model_source, else model_id."""
        return self.model_loading_config.source

    @property
    def engine_name(self) -> EngineName:
        """The engine that serves this model, explicit or chosen from the source."""
        if self.engine is not None:
            return self.engine
        return "llama_cpp" if self.model_source.lower().endswith(".gguf") else "vllm"

    @model_validator(mode="after")
    def _check_engine_matches_source(self) -> LLMConfig:
        if self.engine == "llama_cpp" and not self.model_source.lower().endswith(".gguf"):
            raise ValueError(
                f"engine 'llama_cpp' loads a .gguf file, but model_source is "
                f"{self.model_source!r}; give the path of a .gguf file as "
                f"model_loading_config.model_source, or use engine 'vllm'"
            )
        if self.accelerator_type is not None and self.engine_name == "llama_cpp":
            raise ValueError(
                f"accelerator_type={self.accelerator_type!r} was given but the model is served "
                f"by llama_cpp, which runs on CPU; remove accelerator_type or use engine 'vllm'"
            )
        return self


def validate_llm_config(config: LLMConfig | dict[str, Any], where: str = "llm_config") -> LLMConfig:
    """An LLMConfig from a config or a dict, or ConfigError naming each bad field and value."""
    if isinstance(config, LLMConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(
            f"Invalid {where}: expected a mapping of LLMConfig fields, got "
            f"{type(config).__name__} {config!r}"
        )
    try:
        return LLMConfig(**config)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None
    except TypeError as error:  # keys that are not strings
        raise ConfigError(f"Invalid {where}: {error}") from None


class LLMServingArgs(_Strict):
    """What ``build_openai_app`` takes: the config file's ``args`` of an LLM application."""

    llm_configs: list[LLMConfig] = Field(
        min_length=1, description="The models to serve, one LLMServer deployment each."
    )
    ingress_deployment_config: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "swell deployment options for the OpenAI ingress (LLMRouter), which takes every "
            "HTTP request and routes it to the model's LLMServer."
        ),
    )


def validate_serving_args(
    args: LLMServingArgs | dict[str, Any], where: str = "build_openai_app args"
) -> LLMServingArgs:
    """LLMServingArgs from args or a dict, or ConfigError naming each bad field and value."""
    if isinstance(args, LLMServingArgs):
        return args
    if not isinstance(args, dict):
        raise ConfigError(
            f"Invalid {where}: expected a mapping with 'llm_configs', got "
            f"{type(args).__name__} {args!r}"
        )
    try:
        return LLMServingArgs(**args)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, where)) from None
    except TypeError as error:
        raise ConfigError(f"Invalid {where}: {error}") from None
