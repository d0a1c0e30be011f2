"""Ray is optional: swell never imports it unless asked, and says how to get it when asked."""

from __future__ import annotations

import subprocess
import sys

import pytest

import swell
from swell import api
from swell.config import ControllerOptions, ServeConfig, validate_model
from swell.exceptions import ConfigError


def test_swell_does_not_import_ray() -> None:
    code = (
        "import sys, swell, swell.cli, swell._instance, swell._engines.local;"
        "sys.exit(1 if 'ray' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_address_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'swell\[ray\]'"):
        swell.start(address="auto", admin_port=0)
    assert api._instance is None  # nothing was left half started


def test_address_and_state_dir_are_exclusive() -> None:
    with pytest.raises(ConfigError, match="state_dir cannot be combined with address"):
        validate_model(ControllerOptions, {"address": "auto", "state_dir": "/tmp/x"}, "options")


def test_proxy_location_is_defined_once() -> None:
    assert ServeConfig().proxy_location == ControllerOptions().proxy_location == "EveryNode"
    with pytest.raises(ConfigError, match="proxy_location"):
        validate_model(ControllerOptions, {"proxy_location": "Everywhere"}, "options")
