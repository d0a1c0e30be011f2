"""Which replica gets a handle call for a model (``multiplexed_model_id``).

A replica that holds the model, if one with room does; else one holding the fewest models, so
new models spread over the replicas instead of pushing each other out of one. Among those,
power of two choices on load, as for any call. The chosen replica counts as holding the model
from then on (its next MODELS report says for sure), so the calls that follow while it loads
go there too instead of loading it a second time elsewhere.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar


class HoldsModels(Protocol):
    models: frozenset[str] | None  # None: not known yet, counted as none


_View = TypeVar("_View", bound=HoldsModels)


def parse_models(payload: bytes) -> frozenset[str] | None:
    """The model ids of a MODELS frame; None if it is not a JSON list of strings."""
    try:
        ids = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(ids, list) or not all(isinstance(model_id, str) for model_id in ids):
        return None
    return frozenset(ids)


def choose_for_model(
    candidates: list[str],
    views: Mapping[str, _View],
    model_id: str,
    score: Callable[[_View, float], int],
    now: float,
) -> str:
    """One of ``candidates`` (replicas with room, at least one) for a call for ``model_id``."""
    held = {replica_id: views[replica_id].models or frozenset() for replica_id in candidates}
    pool = [replica_id for replica_id in candidates if model_id in held[replica_id]]
    if not pool:
        fewest = min(len(models) for models in held.values())
        pool = [replica_id for replica_id in candidates if len(held[replica_id]) == fewest]
    if len(pool) == 1:
        chosen = pool[0]
    else:
        first, second = random.sample(pool, 2)
        chosen = first if score(views[first], now) <= score(views[second], now) else second
    if model_id not in held[chosen]:
        views[chosen].models = held[chosen] | {model_id}
    return chosen
