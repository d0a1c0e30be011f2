"""Config files (serveConfigV2 field names): run, build, and rejection before any change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

import swell
from swell.api import run_config
from swell.config_file import load_config_file
from tests.integration.conftest import Swell, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, document: dict[str, object]) -> Path:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_config_file_deploys_apps_with_overrides(serve: Swell, tmp_path: Path) -> None:
    document = {
        "http_options": {"host": "127.0.0.1", "port": serve.port},
        "applications": [
            {
                "name": "greeter",
                "route_prefix": "/",
                "import_path": "tests.integration.apps:build_greeter",
                "args": {"greeting": "Ahoy", "punctuation": "!"},
                "deployments": [{"name": "WhoAmI", "num_replicas": 1}],
            },
            {
                "name": "env",
                "route_prefix": "/env",
                "import_path": "tests.integration.apps:env_app",
                "runtime_env": {
                    "env_vars": {"SWELL_TEST_GREETING": "from the config"},
                    "working_dir": str(tmp_path),
                },
            },
        ],
    }
    run_config(load_config_file(write_config(tmp_path, document)))
    assert serve.client.get("/").json()["message"] == "Ahoy!"
    status = swell.status().applications
    assert status["greeter"].deployments["WhoAmI"].target_replicas == 1
    env = serve.client.get("/env").json()
    assert env == {"greeting": "from the config", "cwd": str(tmp_path)}


@pytest.mark.parametrize(
    ("mistake", "expected"),
    [
        ({"applications": [{"import_path": "x:y", "colour": "red"}]}, "colour"),
        ({"applications": [{"import_path": "x:y", "route_prefix": "api"}]}, "must start with '/'"),
        (
            {"applications": [{"import_path": "x:y", "runtime_env": {"pip": ["torch"]}}]},
            "runtime_env keys ['pip'] are not supported",
        ),
        (
            {
                "applications": [
                    {"name": "a", "import_path": "x:y"},
                    {"name": "b", "import_path": "x:z"},
                ]
            },
            "route prefixes must be unique",
        ),
        (
            {
                "applications": [
                    {
                        "import_path": "x:y",
                        "deployments": [{"name": "M", "max_ongoing_requests": -3}],
                    }
                ]
            },
            "max_ongoing_requests=-3",
        ),
        ({"http_options": {"port": 70000}, "applications": []}, "http_options.port=70000"),
        ({"proxy_location": "Nowhere", "applications": []}, "proxy_location='Nowhere'"),
    ],
)
def test_invalid_config_is_rejected_with_the_field(
    tmp_path: Path, mistake: dict[str, object], expected: str
) -> None:
    with pytest.raises(swell.ConfigError) as caught:
        load_config_file(write_config(tmp_path, mistake))
    assert expected in str(caught.value)
    assert "serve.yaml" in str(caught.value)


def test_a_bad_config_leaves_running_apps_untouched(serve: Swell, tmp_path: Path) -> None:
    good = {
        "http_options": {"port": serve.port},
        "applications": [{"name": "ok", "import_path": "tests.integration.apps:whoami_app"}],
    }
    run_config(load_config_file(write_config(tmp_path, good)))
    before = {
        r.replica_id for r in swell.status().applications["ok"].deployments["WhoAmI"].replicas
    }
    bad_documents = [
        {"applications": [{"name": "ok", "import_path": "tests.integration.apps:nothing"}]},
        {"applications": [{"name": "ok", "import_path": "tests.nope:app"}]},
        {
            "applications": [
                {
                    "name": "ok",
                    "import_path": "tests.integration.apps:whoami_app",
                    "deployments": [{"name": "NotThere", "num_replicas": 2}],
                }
            ]
        },
    ]
    messages = []
    for document in bad_documents:
        with pytest.raises(swell.ConfigError) as caught:
            run_config(load_config_file(write_config(tmp_path, document)))
        messages.append(str(caught.value))
    assert "has no attribute 'nothing'" in messages[0]
    assert "Cannot import module 'tests.nope'" in messages[1]
    assert "['NotThere']" in messages[2]
    after = {r.replica_id for r in swell.status().applications["ok"].deployments["WhoAmI"].replicas}
    assert after == before
    assert serve.client.get("/").status_code == 200


def test_build_writes_a_config_that_run_serves(tmp_path: Path) -> None:
    output = tmp_path / "built.yaml"
    subprocess.run(
        [sys.executable, "-m", "swell", "build", "examples.hello:app", "-o", str(output)],
        cwd=REPO_ROOT,
        check=True,
        timeout=60,
    )
    document = yaml.safe_load(output.read_text())
    app = document["applications"][0]
    assert app["import_path"] == "examples.hello:app"
    assert app["deployments"] == [{"name": "Hello", "num_replicas": 2, "max_ongoing_requests": 100}]
    port = free_port()
    document["http_options"]["port"] = port
    output.write_text(yaml.safe_dump(document))
    process = subprocess.Popen(
        [sys.executable, "-m", "swell", "run", str(output), "--admin-port", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "application 'default' is serving" in line, line + process.stdout.read()
        answer = httpx.get(f"http://127.0.0.1:{port}/?name=Ada", timeout=10)
        assert answer.json() == {"message": "Hello, Ada"}
    finally:
        process.terminate()
        assert process.wait(60) == 0
        if process.stdout is not None:
            process.stdout.close()
