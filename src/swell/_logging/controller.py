"""The controller's log file: swell's own loggers (``swell.*``) in the controller's process.

Its INFO lines (deploys, autoscaling decisions, replicas started and stopped) go to
``controller.log``; what reached the terminal before (warnings and worse) still does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from swell._logging.files import CONTROLLER_FILE, AppendHandler
from swell._logging.format import Component, SwellFormatter

_SWELL = logging.getLogger("swell")


class ControllerLog:
    """The handler that writes ``controller.log``, attached while the instance runs."""

    def __init__(self, logs_dir: Path) -> None:
        self._handler = AppendHandler(logs_dir / CONTROLLER_FILE)
        self._handler.setFormatter(SwellFormatter(Component("controller", str(os.getpid()))))
        self._handler.setLevel(logging.INFO)
        self._previous_level = _SWELL.level
        _SWELL.addHandler(self._handler)
        if _SWELL.getEffectiveLevel() > logging.INFO:
            _SWELL.setLevel(logging.INFO)

    def close(self) -> None:
        _SWELL.removeHandler(self._handler)
        _SWELL.setLevel(self._previous_level)
        self._handler.close()
