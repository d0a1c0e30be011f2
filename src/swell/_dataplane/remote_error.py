"""A remote exception re-raised in the caller as its own type *and* as swell.RemoteError.

``except ValueError:`` around a handle call then works as it does in one process (and as in
Ray Serve), while ``except swell.RemoteError:`` keeps working too. The raised exception's
class derives from both RemoteError and the original class; it is built without running the
original ``__init__`` (whose signature is unknown), from the unpickled original's ``args``
and attributes. When the original class is not importable in the caller, or cannot be
combined with RemoteError, a plain RemoteError is raised.
"""

from __future__ import annotations

import threading
from typing import Any

from swell.exceptions import RemoteError

_dual_classes: dict[type[BaseException], type[RemoteError] | None] = {}
_lock = threading.Lock()


def remote_error(remote_type: str, message: str, formatted: str, cause: Any) -> RemoteError:
    """The exception to raise in the caller for an error the callee sent."""
    plain = RemoteError(remote_type, message, formatted, cause)
    original = cause
    while isinstance(original, RemoteError) and isinstance(original.cause, BaseException):
        original = original.cause  # passed on by a replica in between: the first raiser's type
    if not isinstance(original, Exception) or isinstance(original, RemoteError):
        return plain
    dual = _dual_class(type(original))
    if dual is None:
        return plain
    try:
        error: RemoteError = dual.__new__(dual)
        error.__dict__.update(getattr(original, "__dict__", {}))
        error.args = original.args
    except Exception:
        return plain
    error.remote_type = remote_type
    error.remote_message = message
    error.remote_traceback = formatted
    error.cause = cause
    error.__dict__["_swell_text"] = str(plain)
    return error


def _dual_class(original: type[BaseException]) -> type[RemoteError] | None:
    with _lock:
        if original in _dual_classes:
            return _dual_classes[original]
        try:
            dual: type[RemoteError] | None = type(
                original.__name__,
                (RemoteError, original),
                {
                    "__module__": original.__module__,
                    "__qualname__": original.__qualname__,
                    "__str__": _dual_str,
                    "__reduce__": _dual_reduce,
                    "__doc__": f"{original.__qualname__} raised in another replica.",
                },
            )
        except TypeError:
            dual = None  # e.g. an instance lay-out conflict, or a final class
        _dual_classes[original] = dual
        return dual


def _dual_str(self: RemoteError) -> str:
    text: str = self.__dict__.get("_swell_text") or RemoteError.__str__(self)
    return text


def _dual_reduce(self: RemoteError) -> tuple[Any, ...]:
    # The dual class is made at run time and cannot be pickled by name: rebuild it where
    # the exception lands (a caller passing it on to its own caller).
    return (
        remote_error,
        (self.remote_type, self.remote_message, self.remote_traceback, self.cause),
    )
