"""Model multiplexing: many models served from one pool of replicas, as in Ray Serve.

``@swell.multiplexed`` wraps a deployment's async model-loading method (or function). Each
replica keeps the models it loaded in an LRU cache of ``max_num_models_per_replica``; a model
pushed out has its ``__del__`` called (awaited when it is a coroutine). Requests that ask for
the same model while it loads share that one load.

Which model a request is for comes from the ``serve_multiplexed_model_id`` header (HTTP) or
``handle.options(multiplexed_model_id=...)``; ``get_multiplexed_model_id()`` returns it. Each
replica tells its callers which models it holds, so handle calls go to a replica that has the
model, and HAProxy keeps sending a model's requests to the replica that served it before.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

from swell._context import multiplexed_model_id
from swell.exceptions import ConfigError

logger = logging.getLogger("swell.multiplex")

DEFAULT_MAX_NUM_MODELS_PER_REPLICA = 3

_Loader = TypeVar("_Loader", bound=Callable[..., Awaitable[Any]])
_MISSING = object()

# Every cache in this process, and who wants to hear when the set of loaded models changes
# (the replica, which tells its callers).
_caches: weakref.WeakSet[ModelCache] = weakref.WeakSet()
_listener: Callable[[list[str]], None] | None = None
_used = False


def get_multiplexed_model_id() -> str:
    """The model the current request is for; "" when it names none."""
    return multiplexed_model_id.get()


def in_use() -> bool:
    """Whether this process defined a multiplexed loader (only then does a replica report
    the models it holds)."""
    return _used


def loaded_model_ids() -> list[str]:
    """The models every cache of this process holds, sorted."""
    return sorted({model_id for cache in list(_caches) for model_id in cache.model_ids()})


def set_listener(listener: Callable[[list[str]], None] | None) -> None:
    """Called with ``loaded_model_ids()`` after each load and eviction (the replica sets it)."""
    global _listener
    _listener = listener


def _changed() -> None:
    if _listener is not None:
        try:
            _listener(loaded_model_ids())
        except Exception:
            logger.exception("reporting the loaded models failed")


def _check_model_id(model_id: Any) -> str:
    if not isinstance(model_id, str):
        raise TypeError(f"a model id must be a string, got {type(model_id).__name__}")
    if not model_id:
        raise ValueError(
            "the model id is empty: send the serve_multiplexed_model_id header, or call "
            "handle.options(multiplexed_model_id=...)"
        )
    return model_id


class ModelCache:
    """One replica's models for one loader: LRU, at most ``capacity`` (-1: no limit)."""

    def __init__(self, load: Callable[[str], Awaitable[Any]], capacity: int) -> None:
        self._load = load
        self._capacity = capacity
        self._models: OrderedDict[str, Any] = OrderedDict()
        self._loading: dict[str, asyncio.Task[Any]] = {}
        _caches.add(self)

    def model_ids(self) -> list[str]:
        return list(self._models)

    async def get(self, model_id: str) -> Any:
        """The model, loaded first if it is not here; concurrent callers share one load."""
        _check_model_id(model_id)
        model = self._models.get(model_id, _MISSING)
        if model is not _MISSING:
            self._models.move_to_end(model_id)
            return model
        loading = self._loading.get(model_id)
        if loading is None:
            loading = asyncio.get_running_loop().create_task(
                self._load_and_keep(model_id), name=f"swell-load-model-{model_id[:64]}"
            )
            self._loading[model_id] = loading
        # A caller that gives up (cancelled) leaves the load running for the others.
        return await asyncio.shield(loading)

    def _over(self, extra: int) -> bool:
        return (
            self._capacity >= 0
            and bool(self._models)
            and (len(self._models) + extra > self._capacity)
        )

    async def _load_and_keep(self, model_id: str) -> Any:
        try:
            # Make room first: the model going out frees its memory for the one coming in.
            while self._over(len(self._loading)):
                await self._evict_oldest()
            model = await self._load(model_id)
            self._models[model_id] = model
            while self._over(0):  # loads that ran side by side may overshoot
                await self._evict_oldest()
        finally:
            self._loading.pop(model_id, None)
        _changed()
        return model

    async def _evict_oldest(self) -> None:
        model_id, model = self._models.popitem(last=False)
        _changed()
        await unload(model, model_id)

    async def unload_all(self) -> None:
        while self._models:
            await self._evict_oldest()


async def unload_all() -> None:
    """Unload every model of this process (the replica is stopping), oldest first."""
    for cache in list(_caches):
        await cache.unload_all()


async def unload(model: Any, model_id: str) -> None:
    """Call the model's ``__del__`` (awaited if async, in a thread if not), as Ray does.

    Python would call it again when the object is collected (an async one would then make a
    coroutine nobody awaits), so the model is then given a class whose ``__del__`` does
    nothing: it runs once.
    """
    hook = getattr(type(model), "__del__", None)
    if hook is None:
        return
    try:
        if inspect.iscoroutinefunction(hook):
            await hook(model)
        else:
            await asyncio.get_running_loop().run_in_executor(None, hook, model)
    except Exception:
        logger.exception("unloading model %r: its __del__ raised", model_id)
    finally:
        _disarm(model)


def _unloaded(self: Any) -> None:
    """The model was unloaded already; its own ``__del__`` ran then."""


_unloaded_classes: dict[type, type] = {}


def _unloaded_class(cls: type) -> type:
    """A subclass of ``cls`` with the same layout and a ``__del__`` that does nothing."""
    unloaded = _unloaded_classes.get(cls)
    if unloaded is None:
        namespace = {"__del__": _unloaded, "__slots__": (), "__module__": cls.__module__}
        unloaded = _unloaded_classes[cls] = type(cls.__name__, (cls,), namespace)
    return unloaded


def _disarm(model: Any) -> None:
    """Keep Python from running the model's ``__del__`` a second time, where it can."""
    try:
        model.__class__ = _unloaded_class(type(model))
    except Exception:  # a class that cannot be subclassed or swapped: Python may call it again
        logger.debug("model of type %s keeps its __del__", type(model).__name__)


@overload
def multiplexed(func: _Loader, /) -> _Loader: ...


@overload
def multiplexed(
    func: None = None, /, *, max_num_models_per_replica: int = ...
) -> Callable[[_Loader], _Loader]: ...


def multiplexed(
    func: _Loader | None = None,
    /,
    *,
    max_num_models_per_replica: int = DEFAULT_MAX_NUM_MODELS_PER_REPLICA,
) -> _Loader | Callable[[_Loader], _Loader]:
    """Wrap an async ``load(model_id)`` (a method or a function) in a per-replica LRU cache.

    ``max_num_models_per_replica``: models one replica keeps (-1: no limit); the least
    recently used one is unloaded (its ``__del__`` called) to make room for another.
    """
    capacity = max_num_models_per_replica
    if (
        not isinstance(capacity, int)
        or isinstance(capacity, bool)
        or (capacity != -1 and capacity < 1)
    ):
        raise ConfigError(
            f"max_num_models_per_replica must be a positive integer (or -1 for no limit), "
            f"got {capacity!r}"
        )

    def decorate(load: _Loader) -> _Loader:
        if not inspect.iscoroutinefunction(load):
            raise TypeError(
                f"@multiplexed needs an async function or method; make "
                f"{getattr(load, '__qualname__', load)!r} an `async def`"
            )
        global _used
        _used = True
        attribute = f"__swell_model_cache_{load.__name__}"
        shared: list[ModelCache] = []

        @functools.wraps(load)
        async def load_model(*args: Any) -> Any:
            if len(args) == 2:  # a method: one cache per instance (per replica)
                owner, model_id = args
                cache = owner.__dict__.get(attribute)
                if cache is None:
                    cache = ModelCache(functools.partial(load, owner), capacity)
                    owner.__dict__[attribute] = cache
            elif len(args) == 1:
                (model_id,) = args
                if not shared:
                    shared.append(ModelCache(load, capacity))
                cache = shared[0]
            else:
                raise TypeError(
                    f"{load.__qualname__} takes one argument, the model id "
                    f"(got {len(args)} arguments)"
                )
            return await cache.get(model_id)

        return load_model  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
