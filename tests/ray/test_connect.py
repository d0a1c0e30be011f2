"""Connecting to a Ray cluster fails fast, with the fix, where no cluster answers."""

from __future__ import annotations

import pytest

import swell
from swell import api
from swell.exceptions import ConfigError
from tests.integration.conftest import free_port

pytest.importorskip("ray")


@pytest.mark.parametrize("via_env", [False, True])
def test_an_address_where_nothing_answers(monkeypatch: pytest.MonkeyPatch, via_env: bool) -> None:
    dead = f"127.0.0.1:{free_port()}"
    if via_env:
        monkeypatch.setenv("RAY_ADDRESS", dead)
    with pytest.raises(ConfigError, match=f"nothing answers at {dead}"):
        swell.start(address="auto" if via_env else dead, admin_port=0)
    assert api._instance is None
