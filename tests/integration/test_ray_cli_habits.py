"""Ray's `serve run` flags for where code comes from (``--app-dir``, ``--runtime-env-json``,
``--working-dir``), and handles from a process that did not start swell."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from swell._protocol import CLUSTER_PATH
from tests.integration.conftest import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]

GREETER = textwrap.dedent(
    """
    import os

    import swell as serve


    @serve.deployment
    class Greeter:
        async def __call__(self, request):
            return {"greeting": os.environ.get("GREETING"), "cwd": os.getcwd()}

        def greet(self, name: str) -> str:
            return f"{os.environ['GREETING']}, {name}"

        def fail(self) -> None:
            raise ValueError("no such name")

        async def via_app_handle(self, name: str) -> str:
            return await serve.get_app_handle("default").greet.remote(name)


    app = Greeter.bind()
    """
)

CLIENT = textwrap.dedent(
    """
    import sys

    import swell as serve

    serve.connect(sys.argv[1])
    handle = serve.get_app_handle("default")
    print(handle.greet.remote("Ada").result())
    print(serve.get_deployment_handle("Greeter", "default").via_app_handle.remote("Bo").result())
    try:
        handle.fail.remote().result()
    except ValueError as error:
        print("ValueError:", error.args[0])
    try:
        serve.get_app_handle("nope")
    except serve.ConfigError as error:
        print("ConfigError:", error)
    """
)


def _swell(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "swell", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_app_dir_runtime_env_and_handles_from_another_process(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "greeter_app.py").write_text(GREETER)
    workdir = tmp_path / "work"
    workdir.mkdir()
    port, admin_port = free_port(), free_port()
    address = f"http://127.0.0.1:{admin_port}"
    started = _swell(
        tmp_path,
        "run",
        "greeter_app:app",
        "--non-blocking",
        "--app-dir",
        "code",
        "--runtime-env-json",
        json.dumps({"env_vars": {"GREETING": "Howdy"}}),
        "--working-dir",
        "work",
        "--port",
        str(port),
        "--admin-port",
        str(admin_port),
    )
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=30).json()
        assert answer == {"greeting": "Howdy", "cwd": str(workdir.resolve())}

        # Without the admin token nobody gets the cluster's.
        assert httpx.get(address + CLUSTER_PATH, timeout=10).status_code == 401

        client = subprocess.run(
            [sys.executable, "-c", CLIENT, address],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert client.returncode == 0, client.stderr
        assert client.stdout.splitlines() == [
            "Howdy, Ada",
            "Howdy, Bo",
            "ValueError: no such name",
            "ConfigError: No application named 'nope' is running.",
        ]
    finally:
        stopped = _swell(tmp_path, "shutdown", "-y", "--address", address)
    assert stopped.returncode == 0, stopped.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--app-dir", "missing"], "--app-dir missing: no such directory"),
        (["--runtime-env-json", "{"], "--runtime-env-json is not JSON"),
        (["--runtime-env-json", '{"pip": ["numpy"]}'], "runtime_env keys ['pip']"),
        (["--runtime-env-json", "[1]"], "--runtime-env-json must be a mapping"),
        (["--runtime-env", "env.yaml", "--runtime-env-json", "{}"], "not both"),
        (["--working-dir", "missing"], "--working-dir missing: no such directory"),
    ],
)
def test_bad_source_flags_are_named_before_anything_starts(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    (tmp_path / "env.yaml").write_text("env_vars: {A: b}\n")
    result = _swell(tmp_path, "run", "examples.hello:app", *flags, "--port", str(free_port()))
    assert result.returncode == 1
    assert message in result.stderr


def test_build_imports_from_the_app_dir(tmp_path: Path) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "greeter_app.py").write_text(GREETER)
    result = _swell(tmp_path, "build", "-d", "code", "greeter_app:app")
    assert result.returncode == 0, result.stderr
    assert "import_path: greeter_app:app" in result.stdout
