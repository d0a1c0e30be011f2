"""A small parser for Prometheus' text format, for tests: strict about what swell emits."""

from __future__ import annotations

import re
from collections.abc import Iterable

Sample = tuple[str, dict[str, str], float]

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> list[Sample]:
    """Every sample; fails on a malformed line or a family whose TYPE appears twice."""
    samples: list[Sample] = []
    typed: set[str] = set()
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# TYPE "):
            name = line.split()[2]
            assert name not in typed, f"TYPE of {name} appears twice"
            typed.add(name)
            continue
        if line.startswith("#"):
            continue
        match = _LINE.match(line)
        assert match, f"malformed sample line: {line!r}"
        labels = dict(_PAIR.findall(match.group(3) or ""))
        samples.append((match.group(1), labels, float(match.group(4))))
    return samples


def total(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        value
        for sample_name, sample_labels, value in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    )


def series(samples: Iterable[Sample], name: str, **labels: str) -> list[dict[str, str]]:
    return [
        sample_labels
        for sample_name, sample_labels, _ in samples
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items())
    ]
