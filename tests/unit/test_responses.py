"""What user code returns, turned into an HTTP response."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import types
from typing import Any

import pydantic
import pytest
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse, PlainTextResponse, Response

from swell._replica.responses import to_response


@pytest.mark.parametrize(
    ("value", "body"),
    [
        ({"a": 1, "b": [1, 2]}, b'{"a":1,"b":[1,2]}'),
        ([1, "two", None], b'[1,"two",null]'),
        ({}, b"{}"),
        (42, b"42"),
        (1.5, b"1.5"),
        (True, b"true"),
        ({"text": "héllo ☃"}, '{"text":"héllo ☃"}'.encode()),
    ],
)
def test_json_values(value: Any, body: bytes) -> None:
    response = to_response(value)
    assert response.media_type == "application/json"
    assert response.headers["content-type"] == "application/json"
    assert response.body == body
    assert response.status_code == 200
    assert json.loads(response.body) == value


def test_str_is_plain_text() -> None:
    response = to_response("héllo")
    assert response.media_type == "text/plain; charset=utf-8"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.body == "héllo".encode()


def test_none_is_an_empty_body_as_in_ray() -> None:
    # Ray answers an empty text/plain body for a handler that returns None (not "null").
    response = to_response(None)
    assert response.body == b""
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.status_code == 200


def test_empty_str() -> None:
    response = to_response("")
    assert response.body == b""
    assert response.headers["content-type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    "value", [b"\x00\x01raw", bytearray(b"\x00\x01raw"), memoryview(b"\x00\x01raw")]
)
def test_bytes_are_octet_stream(value: bytes | bytearray | memoryview) -> None:
    response = to_response(value)
    assert response.media_type == "application/octet-stream"
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.body == b"\x00\x01raw"
    assert type(response.body) is bytes


@pytest.mark.parametrize(
    "response",
    [
        Response(b"x", status_code=201, media_type="image/png"),
        JSONResponse({"a": 1}, status_code=404),
        PlainTextResponse("teapot", status_code=418),
    ],
)
def test_response_passes_through(response: Response) -> None:
    assert to_response(response) is response


class Opaque:
    pass


@pytest.mark.parametrize("value", [Opaque(), {"nested": Opaque()}, {(1, 2): "tuple key"}])
def test_unserializable_is_a_helpful_type_error(value: Any) -> None:
    with pytest.raises(TypeError) as caught:
        to_response(value)
    message = str(caught.value)
    assert f"type {type(value).__name__}" in message
    assert "return a dict, list, str, bytes, a pydantic model" in message
    assert isinstance(caught.value.__cause__, TypeError)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


@pytest.mark.parametrize("value", [float("nan"), {"score": float("inf")}])
def test_non_finite_floats_do_not_produce_invalid_json(value: Any) -> None:
    try:
        response = to_response(value)
    except (TypeError, ValueError):
        return  # refusing is fine too
    json.loads(response.body, parse_constant=_reject_constant)


# What Ray Serve JSON-encodes beyond json's own types ------------------------------------------


class Point(pydantic.BaseModel):
    x: int
    when: datetime.date


@dataclasses.dataclass
class Pair:
    left: int
    right: Point


class FakeArray:
    """Stands for a numpy value: recognised by its type's module, converted by tolist()."""

    __module__ = "numpy"

    def tolist(self) -> list[list[int]]:
        return [[1, 2], [3, 4]]


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (QueryParams("a=1&b=2"), {"a": "1", "b": "2"}),
        (types.MappingProxyType({"k": [1]}), {"k": [1]}),
        (Point(x=1, when=datetime.date(2024, 5, 1)), {"x": 1, "when": "2024-05-01"}),
        (
            Pair(1, Point(x=2, when=datetime.date(2024, 1, 2))),
            {"left": 1, "right": {"x": 2, "when": "2024-01-02"}},
        ),
        ({"array": FakeArray()}, {"array": [[1, 2], [3, 4]]}),
        ([Colour.RED, {3, 4}], ["red", [3, 4]]),
    ],
)
def test_values_ray_encodes_as_json(value: Any, expected: Any) -> None:
    response = to_response(value)
    assert response.media_type == "application/json"
    assert json.loads(response.body) == expected


def test_numpy_values_when_numpy_is_installed() -> None:
    numpy = pytest.importorskip("numpy")
    value = {"scalar": numpy.float32(1.5), "array": numpy.arange(3)}
    assert json.loads(to_response(value).body) == {"scalar": 1.5, "array": [0, 1, 2]}
