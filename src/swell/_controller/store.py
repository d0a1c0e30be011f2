"""The controller's checkpoint: desired state and running replicas, on disk.

Written atomically (a temporary file renamed over the old one) whenever it changes, so a
controller killed at any moment leaves a whole checkpoint for its successor to adopt.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import cloudpickle

CHECKPOINT_NAME = "checkpoint.pickle"


class Checkpoint:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / CHECKPOINT_NAME
        self._last: bytes | None = None

    def load(self) -> dict[str, Any] | None:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        self._last = data
        snapshot: dict[str, Any] = cloudpickle.loads(data)
        return snapshot

    def save(self, snapshot: dict[str, Any]) -> None:
        data = cloudpickle.dumps(snapshot)
        if data == self._last:
            return
        temporary = self.path.with_suffix(".tmp")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temporary.replace(self.path)
        self._last = data

    def clear(self) -> None:
        """After a clean shutdown there is nothing left to adopt."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._last = None
