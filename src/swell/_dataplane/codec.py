"""Payload encoding: pickle protocol 5, falling back to cloudpickle only when pickle can't.

Only payloads from a peer that finished the handshake reach ``loads``. A remote error travels
as plain strings plus the pickled exception on its own, so a caller that cannot import the
exception's class still gets the type name, message and traceback.
"""

from __future__ import annotations

import pickle
import traceback
from typing import Any

import cloudpickle

from swell._dataplane.remote_error import remote_error
from swell.exceptions import SerializationError

OK = 0
ERROR = 1


def dumps(value: Any) -> bytes:
    payload: bytes
    try:
        payload = pickle.dumps(value, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError):
        payload = cloudpickle.dumps(value, protocol=5)
        return payload
    if _MAIN in payload:
        # Refers to something in the sender's __main__ (an instance of a class a script
        # defines): no other process has it, so ship its code by value, as Ray does. A
        # string that merely contains "__main__" costs the slower path, never a wrong answer.
        payload = cloudpickle.dumps(value, protocol=5)
    return payload


_MAIN = b"__main__"


def loads(data: bytes) -> Any:
    return pickle.loads(data)


def encode_result(value: Any) -> bytes:
    return dumps((OK, value))


def encode_error(error: BaseException) -> bytes:
    """The exception as type, message and traceback; the object too when it pickles."""
    formatted = "".join(traceback.format_exception(error))
    cause: bytes | None
    try:
        cause = dumps(error)
        pickle.loads(cause)  # an exception that pickles but cannot be rebuilt is left out
    except Exception:
        cause = None
    return dumps((ERROR, (type(error).__name__, str(error), formatted, cause)))


def decode(data: bytes, method: str, replica_id: str) -> Any:
    """The value, or raise the RemoteError the callee sent (also of the original's type).

    Raises SerializationError, naming the call, when ``data`` cannot be unpickled here.
    """
    try:
        kind, value = loads(data)
    except Exception as error:
        what = f"the answer of {method!r} from replica {replica_id}"
        raise undecodable(what, error, "the caller's") from error
    if kind == ERROR:
        remote_type, message, formatted, cause = value
        raise remote_error(remote_type, message, formatted, _optional_loads(cause))
    return value


def _optional_loads(data: bytes | None) -> Any:
    if data is None:
        return None
    try:
        return loads(data)
    except Exception:
        return None  # the class is not importable here: type name and traceback still come


def undecodable(what: str, error: BaseException, where: str) -> SerializationError:
    """The error for a payload that did not unpickle: names it, the cause and the fix."""
    return SerializationError(
        f"could not unpickle {what}: {type(error).__name__}: {error}. Every type it contains "
        f"must be importable, at a compatible version, in {where} process."
    )
