"""``build_openai_app``: the application it builds and the errors it raises, without running it.

Running it for real (HAProxy, replicas, the model) is test_openai_app_swell.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from swell import ConfigError, DeploymentHandle
from swell._import_path import load_application
from swell.config_file import load_config_file
from swell.deployment import Application
from swell.llm import (
    HandleBackend,
    LLMBackend,
    LLMConfig,
    LLMRouter,
    LLMServer,
    LLMServingArgs,
    build_llm_deployment,
    build_openai_app,
)
from swell.llm.deployments import server_deployment_name

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llm.yaml"
GGUF = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf(model_id: str = "smollm2", **fields: Any) -> dict[str, Any]:
    return {"model_loading_config": {"model_id": model_id, "model_source": GGUF}, **fields}


def deployments(app: Application) -> dict[str, dict[str, Any]]:
    return {
        node.deployment.name: node.deployment.config.model_dump(exclude_unset=True)
        for node in app.walk()
    }


def test_one_llm_server_per_model_behind_one_router() -> None:
    app = build_openai_app(
        {
            "llm_configs": [
                gguf(deployment_config={"num_replicas": 2, "max_queued_requests": 8}),
                {
                    "model_loading_config": {"model_id": "Qwen/Qwen2.5-0.5B-Instruct"},
                    "accelerator_type": "H100",
                    "deployment_config": {
                        "autoscaling_config": {"min_replicas": 1, "max_replicas": 4}
                    },
                },
            ]
        }
    )
    assert app.ingress_name == "LLMRouter"
    assert app.root.deployment.func_or_class is LLMRouter
    found = deployments(app)
    assert list(found) == ["LLMServer_smollm2", "LLMServer_Qwen_Qwen2.5-0.5B-Instruct", "LLMRouter"]
    assert found["LLMServer_smollm2"]["num_replicas"] == 2
    assert found["LLMServer_smollm2"]["max_queued_requests"] == 8
    qwen = found["LLMServer_Qwen_Qwen2.5-0.5B-Instruct"]
    assert qwen["autoscaling_config"]["max_replicas"] == 4
    assert qwen["max_ongoing_requests"] == 256  # vLLM batches: many at once per replica
    assert qwen["ray_actor_options"] == {"accelerator_type": "H100"}
    assert found["LLMRouter"]["max_ongoing_requests"] == 1024
    # The router gets the model ids and, in the replica, one handle per LLMServer.
    model_ids, *servers = app.root.args
    assert model_ids == ["smollm2", "Qwen/Qwen2.5-0.5B-Instruct"]
    assert [s.root.deployment.func_or_class for s in servers] == [LLMServer, LLMServer]
    assert isinstance(servers[0].root.args[0], LLMConfig)


def test_llm_config_objects_and_keywords_are_accepted() -> None:
    config = LLMConfig(**gguf())
    for app in (
        build_openai_app({"llm_configs": [config]}),
        build_openai_app(llm_configs=[config]),
        build_openai_app(LLMServingArgs(llm_configs=[config])),
    ):
        assert list(deployments(app)) == ["LLMServer_smollm2", "LLMRouter"]
    app = build_openai_app(
        {"llm_configs": [gguf()], "ingress_deployment_config": {"num_replicas": 2}}
    )
    assert deployments(app)["LLMRouter"]["num_replicas"] == 2
    named = build_openai_app(llm_configs=[gguf(deployment_config={"name": "Small"})])
    assert list(deployments(named)) == ["Small", "LLMRouter"]
    assert build_llm_deployment(gguf()).ingress_name == "LLMServer_smollm2"


def test_deployment_names_are_valid() -> None:
    assert server_deployment_name("meta-llama/Llama-3.1-8B") == "LLMServer_meta-llama_Llama-3.1-8B"
    assert server_deployment_name("a b:c") == "LLMServer_a_b_c"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, r"llm_configs=.*Field required"),
        ({"llm_configs": []}, r"llm_configs=\[\]: List should have at least 1 item"),
        ({"llm_configs": [{"model_loading_config": {}}]}, r"llm_configs.0.model_loading_config"),
        ({"llm_configs": [gguf()], "extra": 1}, r"extra=1: Extra inputs are not permitted"),
        (
            {"llm_configs": [gguf(deployment_config={"num_replicas": -1})]},
            r"llm_configs\[0\].deployment_config \(model 'smollm2'\):\n  num_replicas=-1",
        ),
        (
            {"llm_configs": [gguf(deployment_config={"max_ongoing": 3})]},
            r"max_ongoing=3: Extra inputs are not permitted",
        ),
        (
            {"llm_configs": [gguf(), gguf(deployment_config={"num_replicas": 2})]},
            r"llm_configs\[1\]: model_id 'smollm2' is already served by llm_configs\[0\]",
        ),
        (
            {"llm_configs": [gguf("a/b"), gguf("a_b")]},
            r"llm_configs\[1\]: its deployment would be named 'LLMServer_a_b'.*deployment_config",
        ),
        (
            {"llm_configs": [gguf(runtime_env={"env_vars": {"A": "1"}})]},
            r"runtime_env=.* is not applied per model",
        ),
        (
            {"llm_configs": [gguf()], "ingress_deployment_config": {"max_ongoing_requests": 0}},
            r"ingress_deployment_config:\n  max_ongoing_requests=0",
        ),
        (
            {"llm_configs": [gguf()], "ingress_deployment_config": {"name": "LLMServer_smollm2"}},
            r"name 'LLMServer_smollm2' is taken by llm_configs\[0\]",
        ),
    ],
)
def test_errors_name_the_field(args: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_openai_app(args)


def test_not_a_mapping() -> None:
    with pytest.raises(ConfigError, match="takes a mapping of args"):
        build_openai_app([gguf()])  # type: ignore[arg-type]


def test_the_handle_backend_is_an_llm_backend() -> None:
    assert isinstance(HandleBackend(DeploymentHandle("LLMServer_x", "default")), LLMBackend)


def test_the_example_config_file_builds() -> None:
    config = load_config_file(EXAMPLE)
    (app_config,) = config.applications
    assert app_config.import_path == "swell.llm:build_openai_app"
    app = load_application(app_config.import_path, app_config.args)
    found = deployments(app)
    assert list(found) == ["LLMServer_smollm2", "LLMRouter"]
    assert found["LLMServer_smollm2"]["num_replicas"] == 2


def test_importing_the_builder_loads_no_engine_and_no_fastapi() -> None:
    code = (
        "import sys, swell\n"
        "from swell.llm import build_openai_app, LLMConfig\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in "
        "('fastapi', 'llama_cpp', 'vllm', 'torch', 'openai')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
