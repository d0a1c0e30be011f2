"""LLMConfig: Ray Serve LLM's fields, the engine chosen from the source, clear errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from typing import Any

import pytest

from swell.exceptions import BackPressureError, ConfigError
from swell.llm import (
    ContextLengthExceededError,
    EngineOverloadedError,
    GenerationRequest,
    InvalidRequestError,
    LLMConfig,
    ModelLoadingConfig,
    validate_llm_config,
)
from swell.llm.engines import create_engine
from swell.llm.engines.llama_cpp import LlamaCppEngine
from swell.llm.engines.vllm import VLLMEngine


def config(model_id: str, model_source: str | None = None, **fields: Any) -> LLMConfig:
    loading = ModelLoadingConfig(model_id=model_id, model_source=model_source)
    return LLMConfig(model_loading_config=loading, **fields)


def test_engine_is_chosen_from_the_source() -> None:
    assert config("m", "/x/Model.Q4.GGUF").engine_name == "llama_cpp"
    hf = config("Qwen/Qwen2.5-7B-Instruct")
    assert hf.model_source == "Qwen/Qwen2.5-7B-Instruct"
    assert hf.engine_name == "vllm"
    assert config("m", "/x/m.gguf", engine="vllm").engine_name == "vllm"


def test_create_engine_picks_the_class_without_importing_engines() -> None:
    engine = create_engine(config("m", "/x/m.gguf", engine_kwargs={"n_ctx": 1024}))
    assert isinstance(engine, LlamaCppEngine) and engine.model_id == "m"
    assert isinstance(create_engine(config("a/b")), VLLMEngine)


def test_importing_swell_llm_imports_no_engine() -> None:
    code = (
        "import sys, swell.llm\n"
        "from swell.llm.engines import llama_cpp, vllm\n"
        "swell.llm.create_engine(swell.llm.validate_llm_config("
        "{'model_loading_config': {'model_id': 'a/b'}}))\n"
        "print(sorted(m for m in ('llama_cpp', 'vllm', 'torch') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_config_defaults_and_fields() -> None:
    config = validate_llm_config(
        {
            "model_loading_config": {"model_id": "qwen", "model_source": "Qwen/Qwen2.5-0.5B"},
            "deployment_config": {"num_replicas": 2},
            "engine_kwargs": {"tensor_parallel_size": 2},
            "accelerator_type": "H100",
            "runtime_env": {"env_vars": {"A": "1"}},
        }
    )
    assert config.model_id == "qwen"
    assert config.deployment_config == {"num_replicas": 2}
    assert config.engine_kwargs == {"tensor_parallel_size": 2}
    assert validate_llm_config(config) is config


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"model_loading_config": {"model_id": "m"}, "engin": "vllm"}, ["engin"]),
        ({"model_loading_config": {"model_id": "m", "source": "x"}}, ["source"]),
        ({"model_loading_config": {"model_id": "m"}, "engine": "tgi"}, ["engine", "'tgi'"]),
        ({}, ["model_loading_config"]),
        (
            {
                "model_loading_config": {"model_id": "m", "model_source": "x/y"},
                "engine": "llama_cpp",
            },
            ["llama_cpp", ".gguf", "'x/y'"],
        ),
        (
            {"model_loading_config": {"model_id": "m.gguf"}, "accelerator_type": "A100"},
            ["accelerator_type", "CPU"],
        ),
    ],
)
def test_bad_configs_name_the_field(config: dict[str, object], names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        validate_llm_config(config, where="llm_configs[0]")
    message = str(caught.value)
    assert "llm_configs[0]" in message
    for name in names:
        assert name in message


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_llm_config(["m"])  # type: ignore[arg-type]


def test_errors_keep_their_fields_through_pickle() -> None:
    error = ContextLengthExceededError(
        prompt_tokens=10, max_tokens=20, context_length=16, param="messages"
    )
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ContextLengthExceededError
    assert (copy.prompt_tokens, copy.max_tokens, copy.context_length) == (10, 20, 16)
    assert copy.param == "messages" and copy.code == "context_length_exceeded"
    assert str(copy) == str(error) and "10 in the messages, 20 in the completion" in str(copy)
    overloaded = pickle.loads(pickle.dumps(EngineOverloadedError("full")))
    assert isinstance(overloaded, BackPressureError)
    assert isinstance(overloaded, EngineOverloadedError) and overloaded.status_code == 503


def test_generation_request_checks() -> None:
    with pytest.raises(InvalidRequestError, match="exactly one"):
        GenerationRequest(request_id="r")
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        GenerationRequest(request_id="r", prompt="x", max_tokens=0)
    request = GenerationRequest(request_id="r", prompt="x", stop=("a",))
    assert pickle.loads(pickle.dumps(request)) == request
