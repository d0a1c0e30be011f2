"""The command line's runtime_env is the default for applications that set none."""

from __future__ import annotations

from pathlib import Path

import pytest

from swell._app_source import apply_default_runtime_env, runtime_env_from, with_default_runtime_env
from swell.config import ServeConfig, validate_model
from swell.exceptions import ConfigError

DOCUMENT = {
    "applications": [
        {"name": "a", "route_prefix": "/a", "import_path": "m:a"},
        {
            "name": "b",
            "route_prefix": "/b",
            "import_path": "m:b",
            "runtime_env": {"env_vars": {"OWN": "1"}},
        },
    ]
}


def test_only_applications_without_a_runtime_env_take_the_command_lines() -> None:
    default = {"env_vars": {"CLI": "1"}}
    document = with_default_runtime_env(DOCUMENT, default)
    assert [app["runtime_env"] for app in document["applications"]] == [
        {"env_vars": {"CLI": "1"}},
        {"env_vars": {"OWN": "1"}},
    ]
    config = apply_default_runtime_env(validate_model(ServeConfig, DOCUMENT, "config"), default)
    assert [app.runtime_env.env_vars for app in config.applications] == [{"CLI": "1"}, {"OWN": "1"}]


def test_working_dir_flag_overrides_the_files(tmp_path: Path) -> None:
    env_file = tmp_path / "env.yaml"
    env_file.write_text("env_vars: {A: b}\nworking_dir: /elsewhere\n")
    assert runtime_env_from(str(env_file), None, str(tmp_path)) == {
        "env_vars": {"A": "b"},
        "working_dir": str(tmp_path.resolve()),
    }
    assert runtime_env_from(None, None, None) is None


def test_an_unsupported_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"runtime_env keys \['conda'\]"):
        runtime_env_from(None, '{"conda": "env"}', None)
