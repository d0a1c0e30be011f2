"""Metrics from user code, with Ray Serve's ``serve.metrics`` API: Counter, Gauge, Histogram.

Each series is tagged with the ``deployment``, ``replica`` and ``application`` it was recorded
in, as Ray Serve does, and is exported through the node's scrape endpoint (the admin API's
``/metrics``) alongside swell's own metrics. Recording is an in-memory addition; nothing is
sent anywhere until Prometheus scrapes.

Names are exported as given (counters get ``_total`` appended unless they end in it), without
the ``ray_`` prefix Ray's exporter adds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from swell import _context
from swell._metrics.core import (
    REGISTRY,
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Labels,
    check_bounds,
    check_name,
)

__all__ = ["Counter", "Gauge", "Histogram"]

# Set from the replica's context on every record, as Ray Serve does.
_AUTO_TAGS = ("deployment", "replica", "application")


def _auto_values() -> tuple[str, str, str]:
    current = _context._current
    if current is None:
        return ("", "", "")
    return (current.deployment, str(current.replica_id), current.app_name)


class _Metric:
    def __init__(
        self, name: str, description: str = "", tag_keys: Sequence[str] | None = None
    ) -> None:
        check_name(name)
        if tag_keys is None:
            keys: tuple[str, ...] = ()
        elif isinstance(tag_keys, tuple) and all(isinstance(key, str) for key in tag_keys):
            keys = tag_keys
        else:
            raise TypeError(f"tag_keys must be a tuple of strings, got {tag_keys!r}")
        reserved = sorted(set(keys) & set(_AUTO_TAGS))
        if reserved:
            raise ValueError(
                f"tag_keys {reserved} of metric {name!r} are set by swell from the replica "
                "context; remove them from tag_keys"
            )
        self._name = name
        self._description = description
        self._tag_keys = keys
        self._default_tags: dict[str, str] = {}

    @property
    def info(self) -> dict[str, object]:
        """Name, description, tag keys and default tags (as Ray's ``Metric.info``)."""
        return {
            "name": self._name,
            "description": self._description,
            "tag_keys": self._tag_keys,
            "default_tags": dict(self._default_tags),
        }

    def set_default_tags(self, default_tags: Mapping[str, str]) -> None:
        """Tag values used when a record does not give them."""
        self._check_keys(default_tags)
        self._default_tags = {key: str(value) for key, value in default_tags.items()}

    def _check_keys(self, tags: Mapping[str, str]) -> None:
        unknown = sorted(set(tags) - set(self._tag_keys))
        if unknown:
            raise ValueError(
                f"tags {unknown} are not among metric {self._name!r}'s tag_keys "
                f"{list(self._tag_keys)}; declare them in tag_keys"
            )

    def _key(self, tags: Mapping[str, str] | None) -> Labels:
        values = self._default_tags if not tags else {**self._default_tags, **tags}
        if tags:
            self._check_keys(tags)
        try:
            own = tuple(str(values[key]) for key in self._tag_keys)
        except KeyError as missing:
            raise ValueError(
                f"metric {self._name!r} needs a value for tag {missing.args[0]!r}: pass it in "
                "tags= or set_default_tags()"
            ) from None
        return (*_auto_values(), *own)


class Counter(_Metric):
    """A count that only goes up, such as requests seen by a model."""

    def __init__(
        self, name: str, description: str = "", tag_keys: Sequence[str] | None = None
    ) -> None:
        super().__init__(name, description, tag_keys)
        exported = name if name.endswith("_total") else f"{name}_total"
        family = REGISTRY.register(
            CounterFamily(exported, description, (*_AUTO_TAGS, *self._tag_keys))
        )
        assert isinstance(family, CounterFamily)
        self._family = family

    def inc(self, value: float = 1.0, tags: Mapping[str, str] | None = None) -> None:
        if value <= 0:
            raise ValueError(f"a Counter only goes up: inc() needs a value > 0, got {value!r}")
        self._family.inc(self._key(tags), float(value))


class Gauge(_Metric):
    """The latest value of something, such as a queue's length."""

    def __init__(
        self, name: str, description: str = "", tag_keys: Sequence[str] | None = None
    ) -> None:
        super().__init__(name, description, tag_keys)
        family = REGISTRY.register(GaugeFamily(name, description, (*_AUTO_TAGS, *self._tag_keys)))
        assert isinstance(family, GaugeFamily)
        self._family = family

    def set(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._family.set(self._key(tags), float(value))


class Histogram(_Metric):
    """Observations counted into fixed buckets (``boundaries``; +Inf is implied)."""

    def __init__(
        self,
        name: str,
        description: str = "",
        boundaries: Sequence[float] | None = None,
        tag_keys: Sequence[str] | None = None,
    ) -> None:
        super().__init__(name, description, tag_keys)
        if not boundaries:
            raise ValueError(f"Histogram {name!r} needs boundaries, e.g. [1, 10, 100]")
        family = REGISTRY.register(
            HistogramFamily(
                name, description, (*_AUTO_TAGS, *self._tag_keys), check_bounds(boundaries)
            )
        )
        assert isinstance(family, HistogramFamily)
        self._family = family

    def observe(self, value: float, tags: Mapping[str, str] | None = None) -> None:
        self._family.observe(self._key(tags), float(value))
