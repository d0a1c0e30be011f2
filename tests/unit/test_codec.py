"""Payload encoding: what a script defines in ``__main__`` reaches other processes."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from swell._dataplane import codec

_LOAD_IN_A_FRESH_INTERPRETER = """
import pickle, sys
value = pickle.loads(sys.stdin.buffer.read())
print(type(value).__name__, value.num_nodes)
"""


@pytest.fixture
def main_class() -> Iterator[type]:
    """A class as a script defines it: in ``__main__``, where plain pickle finds it by name."""
    main = sys.modules["__main__"]
    cls = type("Graph", (), {"__module__": "__main__", "num_nodes": 0})
    main.Graph = cls  # type: ignore[attr-defined]
    try:
        yield cls
    finally:
        del main.Graph  # type: ignore[attr-defined]


def test_instances_of_main_classes_travel_by_value(main_class: type) -> None:
    graph = main_class()
    graph.num_nodes = 100  # type: ignore[attr-defined]
    payload = codec.dumps(("predict", (graph,), {}))
    child = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_FRESH_INTERPRETER],
        input=codec.dumps(graph),
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr.decode()
    assert child.stdout.split() == [b"Graph", b"100"]
    method, (loaded,), _ = codec.loads(payload)
    assert (method, loaded.num_nodes) == ("predict", 100)


def test_a_string_mentioning_main_still_round_trips() -> None:
    value = {"text": "mentions __main__ but is only a string", "n": [1, 2]}
    assert codec.loads(codec.dumps(value)) == value
    assert codec.loads(codec.dumps([1, "two"])) == [1, "two"]
