"""``module:attribute`` import paths and the errors they give."""

from __future__ import annotations

import os.path
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from swell import ConfigError
from swell._import_path import import_attribute


@pytest.fixture(autouse=True)
def _restore_sys_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """import_attribute puts the cwd on sys.path; keep that from leaking between tests."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield


def test_colon_form() -> None:
    assert import_attribute("os.path:join") is os.path.join


def test_dotted_form() -> None:
    assert import_attribute("os.path.join") is os.path.join


def test_nested_attribute() -> None:
    assert import_attribute("os:path.join") is os.path.join


def test_cwd_becomes_importable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "swell_unit_cwd_module.py").write_text("app = 'from cwd'\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "swell_unit_cwd_module", raising=False)
    try:
        assert import_attribute("swell_unit_cwd_module:app") == "from cwd"
    finally:
        sys.modules.pop("swell_unit_cwd_module", None)


def test_missing_module_names_the_module() -> None:
    with pytest.raises(ConfigError) as caught:
        import_attribute("swell_no_such_module_xyz:app")
    assert "'swell_no_such_module_xyz'" in str(caught.value)


def test_missing_submodule_names_it() -> None:
    with pytest.raises(ConfigError) as caught:
        import_attribute("os.no_such_submodule_xyz:app")
    assert "no_such_submodule_xyz" in str(caught.value)


def test_missing_attribute_names_attribute_and_module() -> None:
    with pytest.raises(ConfigError) as caught:
        import_attribute("os.path:no_such_attribute_xyz")
    message = str(caught.value)
    assert "'no_such_attribute_xyz'" in message
    assert "'os.path'" in message


def test_missing_nested_attribute() -> None:
    with pytest.raises(ConfigError, match=r"'path\.nope'"):
        import_attribute("os:path.nope")


@pytest.mark.parametrize("path", ["nocolon", ":app", "os.path:", ""])
def test_malformed_path(path: str) -> None:
    with pytest.raises(ConfigError, match="module:attribute"):
        import_attribute(path)


def test_missing_dependency_of_an_existing_module_propagates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The module exists; what it imports does not: the user sees the real ImportError."""
    (tmp_path / "swell_unit_has_bad_import.py").write_text("import swell_unit_elsewhere_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as caught:
            import_attribute("swell_unit_has_bad_import:app")
        assert caught.value.name == "swell_unit_elsewhere_xyz"
    finally:
        sys.modules.pop("swell_unit_has_bad_import", None)


def test_missing_dependency_of_an_existing_module_is_not_reported_as_a_typo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module that exists but imports something missing must not be blamed on its name."""
    (tmp_path / "swell_unit_dep_missing_app.py").write_text("import swell_unit_dep_missing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ModuleNotFoundError) as caught:
            import_attribute("swell_unit_dep_missing_app:app")
        assert caught.value.name == "swell_unit_dep_missing"
    finally:
        sys.modules.pop("swell_unit_dep_missing_app", None)
