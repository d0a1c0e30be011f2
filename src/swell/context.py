"""The request context: which request the running code serves, as Ray's ``ray.serve.context``.

Inside a replica, every HTTP request and every handle call runs with a ``_RequestContext`` in
a context variable: its ``request_id`` is the one HAProxy gave the request (the client's
``X-Request-ID`` when sane), and handle calls carry it to the replicas they reach, so one id
follows a request through every deployment, its log lines and its error bodies.
``swell.get_request_id()`` is the short way to read it.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from swell._context import ReplicaContext, multiplexed_model_id

__all__ = ["ReplicaContext", "get_request_id"]


@dataclass(slots=True)
class _RequestContext:
    """Ray's request context fields: empty strings outside a request. (Not frozen: a frozen
    dataclass costs a microsecond more to build, on every request; treat it as read-only.)"""

    route: str = ""
    request_id: str = ""
    app_name: str = ""
    is_http_request: bool = False

    @property
    def multiplexed_model_id(self) -> str:
        """The model this request is for (``get_multiplexed_model_id()``), "" if none."""
        return multiplexed_model_id.get()

    @property
    def _internal_request_id(self) -> str:
        return self.request_id


_EMPTY = _RequestContext()

_serve_request_context: contextvars.ContextVar[_RequestContext] = contextvars.ContextVar(
    "swell_request_context", default=_EMPTY
)


def _get_serve_request_context() -> _RequestContext:
    """The context of the request this code serves (all fields empty outside one)."""
    return _serve_request_context.get()


def _set_request_context(context: _RequestContext) -> None:
    """Enter a request: called by swell where a request or handle call begins (its own task)."""
    _serve_request_context.set(context)


def get_request_id() -> str:
    """The id of the request this code serves ("" outside a request).

    The same id is in the ``X-Request-ID`` answer header, in HAProxy's and every replica's
    access log, and on each log line written while serving the request.
    """
    return _serve_request_context.get().request_id


# What a handle call carries to the callee: (request_id, route), or None outside a request. A
# tuple pickles in a few bytes. (The model id travels on its own: a handle's
# multiplexed_model_id option sets it, as in Ray, not the caller's request.)
CallMetadata = tuple[str, str] | None


def call_metadata() -> CallMetadata:
    """The current request's metadata for an outgoing handle call."""
    context = _serve_request_context.get()
    if context is _EMPTY:
        return None
    return (context.request_id, context.route)


def enter_call(metadata: CallMetadata, app_name: str) -> None:
    """A handle call begins in this (its own) task: take on the caller's request."""
    if metadata is not None:
        request_id, route = metadata
        _serve_request_context.set(_RequestContext(route, request_id, app_name))
