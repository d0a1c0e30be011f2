"""The model an HTTP request is for: its ``serve_multiplexed_model_id`` header."""

from __future__ import annotations

from starlette.types import Scope

from swell._context import multiplexed_model_id
from swell._protocol import MULTIPLEXED_MODEL_ID_HEADER

_KEY = MULTIPLEXED_MODEL_ID_HEADER.encode()


def set_request_model_id(scope: Scope) -> None:
    """Make the header's model id what get_multiplexed_model_id() returns in this request.

    Called in the request's own task, so the value ends with the request.
    """
    for name, value in scope.get("headers", ()):
        if name == _KEY:
            multiplexed_model_id.set(value.decode("latin-1"))
            return
