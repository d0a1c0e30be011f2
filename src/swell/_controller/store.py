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


class Checkpoint:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CHECKPOINT_NAME
        self._last: bytes | None = None

    def load(self) -> dict[str, Any] | None:
        data = read_private(self.path)
        if data is None:
            return None
        self._last = data
        snapshot: dict[str, Any] = cloudpickle.loads(data)
        return snapshot

    def save(self, snapshot: dict[str, Any]) -> None:
        data = cloudpickle.dumps(snapshot)
        if data == self._last:
            return
        write_private(self.path, data)
        self._last = data

    def clear(self) -> None:
        """After a clean shutdown there is nothing left to adopt."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._last = None
