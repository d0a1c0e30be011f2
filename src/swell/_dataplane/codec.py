"""Payload encoding: pickle protocol 5, falling back to cloudpickle only when pickle can't."""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from swell.exceptions import RemoteError

OK = 0
ERROR = 1


def dumps(value: Any) -> bytes:
    try:
        return pickle.dumps(value, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        payload: bytes = cloudpickle.dumps(value, protocol=5)
        return payload


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def encode_result(value: Any) -> bytes:
    return dumps((OK, value))


def encode_error(error: BaseException) -> bytes:
    """The remote exception as type, message and traceback; the object too when it pickles."""
    formatted = "".join(traceback.format_exception(error))
    try:
        cause: Any = pickle.loads(dumps(error))
    except Exception:
        cause = None
    remote = RemoteError(type(error).__name__, str(error), formatted, cause)
    try:
        return dumps((ERROR, remote))
    except Exception:
        return dumps((ERROR, RemoteError(type(error).__name__, str(error), formatted)))


def decode(data: bytes) -> Any:
    """The value, or raise the RemoteError the callee sent."""
    kind, value = loads(data)
    if kind == ERROR:
        raise value
    return value
