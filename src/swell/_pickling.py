"""Pickle reducers for third-party types that cloudpickle cannot ship by value as they are.

starlette's ``State`` (every FastAPI app has one, ``app.state``) answers any attribute lookup
from its ``_state`` dict, including the ``_state`` lookup pickle makes before that dict is
restored, so unpickling recursed forever: a FastAPI app defined in ``__main__`` could not
reach the replicas. Registered in ``copyreg``, which pickle and cloudpickle both consult.
"""

from __future__ import annotations

import copyreg
from typing import Any

_registered = False


def _reduce_state(state: Any) -> tuple[Any, tuple[dict[str, Any]]]:
    return type(state), (dict(vars(state).get("_state", {})),)


def register_reducers() -> None:
    """Idempotent; does nothing when starlette is not installed."""
    global _registered
    if _registered:
        return
    try:
        from starlette.datastructures import State
    except ImportError:
        return
    copyreg.pickle(State, _reduce_state)
    _registered = True
