"""Payload encoding: pickle protocol 5, falling back to cloudpickle only when pickle can't.

Only payloads from a peer that finished the handshake reach ``loads``. A remote error travels
as plain strings plus the pickled exception on its own, so a caller that cannot import the
exception's class still gets the type name, message and traceback.

A stream's items travel in batches (``wire.FrameWriter.item``): the items a generator yields
before it next waits go out as one pickled list. An item is pickled when it is yielded (the
generator may change a list or dict it yielded before the batch leaves), except the
immutable scalars (str, bytes, int, float, bool, None), which join the list as they are:
one ``pickle.dumps`` for the whole batch costs about a sixth of one per item.
"""

from __future__ import annotations

import io
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


# Item types that cannot change after they are yielded: batched as they are.
SCALARS = frozenset({str, bytes, int, float, bool, type(None)})


class Encoded:
    """An item pickled when it was yielded; inside a batch it unpickles as the item itself."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __reduce__(self) -> tuple[Any, ...]:
        return (pickle.loads, (self.data,))


def encode_items(items: list[Any]) -> tuple[bool, bytes]:
    """A batch's payload: (True, the pickled list), or (False, the one item's own pickle)."""
    if len(items) == 1 and type(items[0]) is Encoded:
        return False, items[0].data  # one item alone (a token per wake-up): no list around it
    # Only scalars and Encoded (which reduces to pickle.loads): plain pickle always works.
    return True, pickle.dumps(items, protocol=5)


def decode_items(
    data: bytes, batch: bool, method: str, replica_id: str
) -> tuple[list[Any], SerializationError | None]:
    """A batch's items, and the error to raise after them if one did not unpickle here."""
    try:
        if batch:
            items: list[Any] = loads(data)
            return items, None
        return [loads(data)], None
    except Exception as error:
        what = f"an item streamed by {method!r} from replica {replica_id}"
        failure = undecodable(what, error, "the caller's")
        failure.__cause__ = error
        if not batch:
            return [], failure
    # The items before the one that failed still arrive, in order, then the error.
    try:
        items = _TolerantUnpickler(io.BytesIO(data)).load()
    except Exception:
        return [], failure
    for index, item in enumerate(items):
        if type(item) is _Undecodable:
            failure = undecodable(what, item.error, "the caller's")
            failure.__cause__ = item.error
            return items[:index], failure
    return items, failure


class _Undecodable:
    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


_PICKLE_LOADS = (pickle.loads.__module__, pickle.loads.__name__)


def _tolerant_loads(data: bytes) -> Any:
    try:
        return pickle.loads(data)
    except Exception as error:
        return _Undecodable(error)


class _TolerantUnpickler(pickle.Unpickler):
    """Unpickles a batch with each Encoded item that fails replaced by an _Undecodable."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == _PICKLE_LOADS:
            return _tolerant_loads
        return super().find_class(module, name)
