"""The controller's checkpoint: desired state and running replicas, on disk.

Written atomically (a fresh 0600 temporary file renamed over the old one) whenever it changes,
so a controller killed at any moment leaves a whole checkpoint for its successor to adopt.
It is unpickled only if it is the user's own private file in the user's private state dir.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import cloudpickle

from swell._private_files import read_private, write_private

CHECKPOINT_NAME = "checkpoint.pickle"


class SnapshotStore:
    """A checkpoint kept as one pickled snapshot; an unchanged snapshot is not written again.
    Subclasses say where the bytes live (a file here, Ray's key-value store on a cluster)."""

    def __init__(self) -> None:
        self._last: bytes | None = None

    def _read(self) -> bytes | None:
        raise NotImplementedError

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _delete(self) -> None:
        raise NotImplementedError

    def load(self) -> dict[str, Any] | None:
        data = self._read()
        if data is None:
            return None
        self._last = data
        snapshot: dict[str, Any] = cloudpickle.loads(data)
        return snapshot

    def save(self, snapshot: dict[str, Any]) -> None:
        data = cloudpickle.dumps(snapshot)
        if data == self._last:
            return
        self._write(data)
        self._last = data

    def clear(self) -> None:
        """After a clean shutdown there is nothing left to adopt."""
        self._delete()
        self._last = None


class Checkpoint(SnapshotStore):
    """The checkpoint in the state dir."""

    def __init__(self, state_dir: Path) -> None:
        super().__init__()
        self.path = state_dir / CHECKPOINT_NAME

    def _read(self) -> bytes | None:
        return read_private(self.path)

    def _write(self, data: bytes) -> None:
        write_private(self.path, data)

    def _delete(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
