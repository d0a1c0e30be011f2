"""The controller's checkpoint file: written only on change, whole, and cleared on shutdown."""

from __future__ import annotations

from pathlib import Path

from swell._controller.store import CHECKPOINT_NAME, Checkpoint


def test_round_trip_and_clear(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path)
    assert checkpoint.load() is None
    snapshot = {"token": "t", "apps": [{"name": "a", "deployments": []}], "haproxy_pid": 42}
    checkpoint.save(snapshot)
    assert Checkpoint(tmp_path).load() == snapshot
    assert not (tmp_path / "checkpoint.tmp").exists()  # renamed into place, not left behind
    checkpoint.clear()
    assert Checkpoint(tmp_path).load() is None


def test_unchanged_state_is_not_rewritten(tmp_path: Path) -> None:
    checkpoint = Checkpoint(tmp_path)
    checkpoint.save({"apps": []})
    path = tmp_path / CHECKPOINT_NAME
    first = path.stat().st_mtime_ns
    path.write_bytes(path.read_bytes())  # same bytes, new mtime: a rewrite would change it
    touched = path.stat().st_mtime_ns
    checkpoint.save({"apps": []})
    assert path.stat().st_mtime_ns == touched
    checkpoint.save({"apps": [1]})
    assert Checkpoint(tmp_path).load() == {"apps": [1]}
    assert first <= touched
