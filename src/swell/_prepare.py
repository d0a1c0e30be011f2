"""``python -m swell._prepare RESULT_PATH [SYS_PATH...]``: import and validate a config.

The controller never imports user code itself: a config's modules are imported here, fresh
(so changed code is seen). The outcome is pickled into RESULT_PATH, a file of its own, so what
the user's modules print while importing cannot corrupt it: ``("ok", prepared)`` or
``("error", message)``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cloudpickle

from swell._targets import prepare_config
from swell.config import ServeConfig, validate_model
from swell.exceptions import ConfigError


def main() -> None:
    result_path = Path(sys.argv[1])
    for entry in reversed(sys.argv[2:]):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    outcome: tuple[str, Any]
    try:
        config = validate_model(ServeConfig, json.load(sys.stdin), "config")
        outcome = ("ok", prepare_config(config))
    except ConfigError as error:
        outcome = ("error", str(error))
    except Exception as error:
        outcome = (
            "error",
            f"Importing the config's applications failed: {type(error).__name__}: {error}",
        )
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as error:
        data = cloudpickle.dumps(("error", f"the prepared applications cannot be pickled: {error}"))
    result_path.write_bytes(data)


if __name__ == "__main__":
    main()
