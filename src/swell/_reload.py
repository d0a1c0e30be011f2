"""``swell run --reload``: redeploy the application when a Python file under the working
directory changes, as Ray's ``serve run --reload`` does.

A change re-submits the application's config to the running instance, which imports it in a
fresh process (a broken edit shows as DEPLOY_FAILED while the last good version serves) and
replaces every replica. The replacement is forced through a marker in the application's
``runtime_env.env_vars``: the code version covers only a deployment's own source file, and an
edit may be in any module it imports.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("swell.reload")

RELOAD_MARKER = "SWELL_RELOAD_GENERATION"
_DEBOUNCE_MS = 300
_READY_TICK_MS = 200


def with_generation(document: dict[str, Any], generation: int) -> dict[str, Any]:
    """The config with every application marked as reload ``generation``."""
    marked = copy.deepcopy(document)
    for app in marked.get("applications", []):
        runtime_env = app.setdefault("runtime_env", {})
        env_vars = runtime_env.setdefault("env_vars", {})
        env_vars[RELOAD_MARKER] = str(generation)
    return marked


def watch_and_redeploy(
    directory: Path,
    document: dict[str, Any],
    submit: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    ready_timeout_s: float = 10.0,
) -> threading.Thread:
    """Watch ``directory`` on a thread until ``stop`` is set; each change calls ``submit``.

    Returns once the watch is in place, so no edit made after this call is missed (call it
    before the application is first imported).
    """
    from watchfiles import PythonFilter, watch  # uvicorn[standard] brings it

    ready = threading.Event()

    def run() -> None:
        generation = 0
        for changes in watch(
            directory,
            watch_filter=PythonFilter(),
            stop_event=stop,
            debounce=_DEBOUNCE_MS,
            rust_timeout=_READY_TICK_MS,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            ready.set()  # the first (empty) yield: the watch is in place
            if not changes:
                continue
            generation += 1
            names = sorted({Path(path).name for _, path in changes})
            print(f"swell: {', '.join(names)} changed; redeploying", flush=True)
            try:
                submit(with_generation(document, generation))
            except Exception as error:  # a bad edit must not end the watch
                print(f"swell: redeploy failed: {error}", flush=True)

    thread = threading.Thread(target=run, name="swell-reload-watch", daemon=True)
    thread.start()
    if not ready.wait(ready_timeout_s):
        logger.warning("the --reload watch did not report ready within %ss", ready_timeout_s)
    return thread
