"""The values Ray Serve turns into JSON beyond json's own: mappings, models, dataclasses, numpy.

Used as ``json.dumps(default=...)``, so it runs only for a value json cannot encode itself and
the common return types never pay for it. numpy is never imported here: a numpy value is
recognised by its type's module.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import pathlib
import uuid
from collections.abc import Mapping, Set
from typing import Any


def jsonable(value: Any) -> Any:
    """A JSON-encodable stand-in for ``value``; TypeError naming the type if there is none."""
    if isinstance(value, Mapping):
        return dict(value)  # e.g. request.query_params, a MappingProxy
    model_dump = getattr(value, "model_dump", None)
    if model_dump is not None and callable(model_dump):  # a pydantic (v2) model
        return model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # arrays to nested lists, scalars to Python numbers
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, uuid.UUID | pathlib.PurePath):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Set | tuple):
        return list(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
