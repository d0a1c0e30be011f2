"""Turning what user code returns into an HTTP response."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response


def to_response(result: Any) -> Response:
    """dict/list/number → JSON, str → text, bytes → octet-stream, a Response as it is."""
    if isinstance(result, Response):
        return result
    if isinstance(result, str):
        return Response(result, media_type="text/plain; charset=utf-8")
    if isinstance(result, bytes | bytearray | memoryview):
        return Response(bytes(result), media_type="application/octet-stream")
    try:
        body = json.dumps(result, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Cannot turn a return value of type {type(result).__name__} into an HTTP "
            f"response ({error}): return a dict, list, str, bytes or a starlette Response, "
            "with JSON values only (no NaN or infinity)."
        ) from error
    return Response(body, media_type="application/json")
