"""Metric families kept as plain dicts of numbers, and the Prometheus text they render to.

Updating a series is a dict lookup and a few float additions: no lock (each process updates
its metrics from its event loop, and a lost increment from a racing user thread costs a count,
never a crash), no object per observation. Rendering happens only when someone scrapes.

A family travels between processes as a *snapshot*, a JSON-able dict, so the node's scrape
endpoint can merge the families of every replica into one valid exposition (Prometheus
rejects a family whose ``# TYPE`` appears twice).
"""

from __future__ import annotations

import bisect
import itertools
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# Ray Serve's default latency buckets (ms), so dashboards built for it read swell's numbers.
# Floats: bisect compares a float latency against them ~3x faster than against ints.
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0, 1000.0, 2000.0,
    5000.0, 10000.0, 60000.0, 120000.0, 300000.0, 600000.0,
)  # fmt: skip

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

Snapshot = dict[str, Any]
Labels = tuple[str, ...]


def check_name(name: str, what: str = "metric name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid Prometheus name: use letters, digits, '_' and ':', "
            "not starting with a digit"
        )
    return name


def check_label(name: str) -> str:
    if not isinstance(name, str) or not _LABEL.match(name) or name.startswith("__"):
        raise ValueError(
            f"tag key {name!r} is not a valid Prometheus label name: use letters, digits and "
            "'_', not starting with a digit or '__'"
        )
    return name


class Family:
    """One metric family: a name, its label names, and a value per combination of labels."""

    kind = "untyped"

    def __init__(self, name: str, description: str, label_names: Sequence[str]) -> None:
        self.name = check_name(name)
        self.description = description
        self.label_names = tuple(check_label(label) for label in label_names)

    def snapshot(self) -> Snapshot:
        raise NotImplementedError


class CounterFamily(Family):
    kind = "counter"

    def __init__(self, name: str, description: str, label_names: Sequence[str]) -> None:
        super().__init__(name, description, label_names)
        self.series: dict[Labels, float] = {}

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        series = self.series
        series[key] = series.get(key, 0.0) + amount

    def snapshot(self) -> Snapshot:
        return _snapshot(self, [[list(k), v] for k, v in self.series.items()])


class GaugeFamily(CounterFamily):
    kind = "gauge"

    def set(self, key: Labels, value: float) -> None:
        self.series[key] = value


class HistogramFamily(Family):
    """Fixed buckets; each series is a list: a count per bucket (+Inf last), sum, count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        description: str,
        label_names: Sequence[str],
        bounds: Sequence[float] = LATENCY_BUCKETS_MS,
    ) -> None:
        super().__init__(name, description, label_names)
        self.bounds = check_bounds(bounds)
        self.series: dict[Labels, list[float]] = {}

    def observe(self, key: Labels, value: float) -> None:
        row = self.series.get(key)
        if row is None:
            row = self.series[key] = new_row(self.bounds)
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-2] += value
        row[-1] += 1

    def snapshot(self) -> Snapshot:
        snapshot = _snapshot(self, [[list(k), list(v)] for k, v in self.series.items()])
        snapshot["bounds"] = list(self.bounds)
        return snapshot


def new_row(bounds: Sequence[float]) -> list[float]:
    """An empty histogram series: one count per bucket and +Inf, then sum and count."""
    return [0.0] * (len(bounds) + 3)


def observe_row(row: list[float], bounds: Sequence[float], value: float) -> None:
    row[bisect.bisect_left(bounds, value)] += 1
    row[-2] += value
    row[-1] += 1


def check_bounds(bounds: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(b) for b in bounds)
    if not values or any(b <= a for a, b in itertools.pairwise(values)):
        raise ValueError(
            f"boundaries {list(bounds)!r} must be a non-empty list of increasing numbers"
        )
    if any(math.isinf(b) or math.isnan(b) for b in values):
        raise ValueError(f"boundaries {list(bounds)!r} must be finite (+Inf is implied)")
    return values


def _snapshot(family: Family, series: list[list[Any]]) -> Snapshot:
    return {
        "name": family.name,
        "type": family.kind,
        "help": family.description,
        "labels": list(family.label_names),
        "series": series,
    }


def family_snapshot(
    name: str,
    kind: str,
    description: str,
    label_names: Sequence[str],
    series: Iterable[tuple[Sequence[str], Any]],
    bounds: Sequence[float] | None = None,
) -> Snapshot:
    """A snapshot built at scrape time from state kept elsewhere (the controller's)."""
    snapshot: Snapshot = {
        "name": name,
        "type": kind,
        "help": description,
        "labels": list(label_names),
        "series": [[list(labels), value] for labels, value in series],
    }
    if bounds is not None:
        snapshot["bounds"] = list(bounds)
    return snapshot


class Registry:
    """A process's families, plus collectors that build snapshots when scraped."""

    def __init__(self) -> None:
        self.families: dict[str, Family] = {}
        self.collectors: list[Callable[[], list[Snapshot]]] = []

    def register(self, family: Family) -> Family:
        """Add a family; one of the same name, kind and labels is shared, not duplicated."""
        existing = self.families.get(family.name)
        if existing is None:
            self.families[family.name] = family
            return family
        if (
            type(existing) is not type(family)
            or existing.label_names != family.label_names
            or getattr(existing, "bounds", None) != getattr(family, "bounds", None)
        ):
            raise ValueError(
                f"metric {family.name!r} already exists as a {existing.kind} with tag keys "
                f"{list(existing.label_names)}"
                + (
                    f" and boundaries {list(getattr(existing, 'bounds', []))}"
                    if isinstance(existing, HistogramFamily)
                    else ""
                )
                + "; use another name or the same definition"
            )
        return existing

    def snapshots(self) -> list[Snapshot]:
        result = [family.snapshot() for family in list(self.families.values())]
        for collect in self.collectors:
            result.extend(collect())
        return result


# What one process exports: swell's own families and the user's (swell.metrics).
REGISTRY = Registry()


# Rendering -------------------------------------------------------------------------------


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _label_text(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{name}="{_escape(str(value))}"' for name, value in pairs)
    return "{" + inner + "}" if inner else ""


def merge(snapshots: Iterable[Snapshot]) -> list[Snapshot]:
    """One snapshot per family name: series of same-named families are put together.

    Series carry their label names along, so families whose label sets differ (a user
    metric defined with other tag keys in another replica) still merge into valid text.
    """
    merged: dict[str, Snapshot] = {}
    for snapshot in snapshots:
        name = snapshot["name"]
        labels = snapshot["labels"]
        rows = [
            (tuple(zip(labels, values, strict=True)), value) for values, value in snapshot["series"]
        ]
        target = merged.get(name)
        if target is None:
            merged[name] = {**snapshot, "rows": rows}
        elif target["type"] == snapshot["type"] and target.get("bounds") == snapshot.get("bounds"):
            target["rows"].extend(rows)
        # A same-named family of another kind would make the text invalid: it is left out.
    return list(merged.values())


def render(snapshots: Iterable[Snapshot]) -> str:
    """Prometheus text exposition (version 0.0.4) of the merged families."""
    out: list[str] = []
    for family in merge(snapshots):
        name, kind = family["name"], family["type"]
        help_text = family["help"].replace("\\", "\\\\").replace("\n", "\\n")
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        if kind != "histogram":
            for pairs, value in family["rows"]:
                out.append(f"{name}{_label_text(pairs)} {_number(value)}")
            continue
        bounds = family["bounds"]
        for pairs, row in family["rows"]:
            cumulative = 0.0
            for bound, count in zip([*bounds, math.inf], row, strict=False):
                cumulative += count
                le = _label_text([*pairs, ("le", _number(float(bound)))])
                out.append(f"{name}_bucket{le} {_number(cumulative)}")
            out.append(f"{name}_sum{_label_text(pairs)} {_number(row[-2])}")
            out.append(f"{name}_count{_label_text(pairs)} {_number(row[-1])}")
    return "\n".join(out) + "\n" if out else ""


# Other exporters' text ---------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?(\s.*)$")


def merge_texts(texts: dict[str, str], label: str) -> str:
    """Several exporters' text with the same families (one HAProxy per node) as one valid
    exposition: each family's HELP and TYPE once, every sample tagged ``label="<key>"``."""
    headers: dict[str, dict[str, str]] = {}  # family -> {"HELP": line, "TYPE": line}
    samples: dict[str, list[str]] = {}
    for key, text in texts.items():
        tag = f'{label}="{_escape(key)}"'
        current = ""
        for line in text.splitlines():
            if line.startswith(("# HELP ", "# TYPE ")):
                current = line.split()[2]
                headers.setdefault(current, {}).setdefault(line[2:6], line)
                samples.setdefault(current, [])
                continue
            match = _SAMPLE.match(line)
            if match is None:
                continue
            name, labels, rest = match.groups()
            tagged = "{" + tag + ("," + labels[1:] if labels and labels != "{}" else "}")
            samples.setdefault(current or name, []).append(f"{name}{tagged}{rest}")
    out: list[str] = []
    for family, lines in samples.items():
        found = headers.get(family, {})
        out += [found[kind] for kind in ("HELP", "TYPE") if kind in found]
        out += lines
    return "".join(line + "\n" for line in out)
