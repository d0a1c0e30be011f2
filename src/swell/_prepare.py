"""``python -m swell._prepare``: import and validate a config in a fresh process.

The controller never imports user code itself: a config's modules are imported here, fresh
(so changed code is seen), and what the controller needs comes back pickled on stdout. A bad
config exits with status 2 and the reason on stderr.
"""

from __future__ import annotations

import json
import sys

import cloudpickle

from swell.api import prepare_config
from swell.config import ServeConfig, validate_model
from swell.exceptions import ConfigError

INVALID_CONFIG = 2


def main() -> None:
    try:
        config = validate_model(ServeConfig, json.load(sys.stdin), "config")
        prepared = prepare_config(config)
    except ConfigError as error:
        sys.stderr.write(str(error))
        sys.exit(INVALID_CONFIG)
    except Exception as error:
        sys.stderr.write(
            f"Importing the config's applications failed: {type(error).__name__}: {error}"
        )
        sys.exit(INVALID_CONFIG)
    sys.stdout.buffer.write(cloudpickle.dumps(prepared))


if __name__ == "__main__":
    main()
