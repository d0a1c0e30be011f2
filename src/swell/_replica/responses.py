"""Turning what user code returns into an HTTP response."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import Response

from swell._replica.jsonable import jsonable


def to_response(result: Any) -> Response:
    """dict/list/number → JSON, str → text, None → empty text (as Ray), bytes →
    octet-stream, a Response as it is."""
    encoded = encode_plain(result)
    if encoded is None:
        response: Response = result
        return response
    headers, body = encoded
    return Response(body, media_type=headers[0][1].decode())


_JSON_HEADERS = [(b"content-type", b"application/json")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]
_BYTES_HEADERS = [(b"content-type", b"application/octet-stream")]


# One encoder for every response: ``json.dumps`` with options builds a new one per call.
_JSON = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, default=jsonable
).encode


def encode_plain(result: Any) -> tuple[list[tuple[bytes, bytes]], bytes] | None:
    """Headers and body for the common return types, without building a Response object.

    None for a Response (sent as it is). The same types and bytes as ``to_response``.
    """
    if isinstance(result, Response):
        return None
    if isinstance(result, str):
        return _TEXT_HEADERS, result.encode()
    if result is None:
        return _TEXT_HEADERS, b""
    if isinstance(result, bytes | bytearray | memoryview):
        return _BYTES_HEADERS, bytes(result)
    try:
        # ``default`` runs only for values json cannot encode itself: dicts, lists, numbers
        # and strings take json's C path as before.
        body = _JSON(result)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"Cannot turn a return value of type {type(result).__name__} into an HTTP "
            f"response ({error}): return a dict, list, str, bytes, a pydantic model, a "
            "dataclass, a numpy value or a starlette Response, with JSON values only (no NaN "
            "or infinity)."
        ) from error
    return _JSON_HEADERS, body.encode()
