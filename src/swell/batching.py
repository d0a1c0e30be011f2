"""``@swell.batch``: callers pass one item each; the method runs on a list of them.

A call joins its replica's queue for that method. A batch is sent as soon as it is full
(``max_batch_size``, measured by ``batch_size_fn`` when given) or when its oldest call has
waited ``batch_wait_timeout_s``, whichever comes first; at most ``max_concurrent_batches`` run
at once. Each caller gets its own element of the returned list, or, for a generator, its own
element of every yielded list (a ``StopIteration`` in its slot ends that caller's stream). An
exception reaches every caller of the batch.

Async methods batch on the caller's event loop. Sync methods (and sync generators) are called
from threads, as swell runs sync user code: their calls batch on one event loop of swell's own
and the method runs in a worker thread, so the replica's loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import queue
import threading
import weakref
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from swell._metrics.process import PROCESS
from swell.config import BatchConfig, validate_model
from swell.exceptions import ConfigError

__all__ = ["batch"]

_QUEUES_ATTRIBUTE = "__swell_batch_queues__"


class _EndOfStream:
    """The marker that ends a caller's stream.

    It pickles by name: a batched generator defined in ``__main__`` ships to replicas by
    value, its wrapper with it, and a plain ``object()`` would arrive as a copy that no
    longer matches the marker the queues put in: the caller would receive it as an item.
    """

    def __reduce__(self) -> str:
        return "_END"


_END = _EndOfStream()


class _Settings:
    """The decorated method's options; the setters replace them for batches formed later."""

    def __init__(self, config: BatchConfig, size_fn: Callable[[list[Any]], int] | None) -> None:
        self.config = config
        self.size_fn = size_fn

    def update(self, where: str, **changes: Any) -> None:
        self.config = validate_model(BatchConfig, {**self.config.model_dump(), **changes}, where)


class _Sink:
    """Where one caller's results go; thread-safe for callers on other threads."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None) -> None:
        # loop: the caller's own loop (async callers); None for callers blocked in a thread.
        self._loop = loop
        self._items: asyncio.Queue[tuple[bool, Any]] | queue.SimpleQueue[tuple[bool, Any]]
        self._items = asyncio.Queue() if loop is not None else queue.SimpleQueue()
        self.closed = False

    def put(self, item: Any) -> None:
        self._deliver((True, item))

    def fail(self, error: BaseException) -> None:
        self._deliver((False, error))

    def end(self) -> None:
        self._deliver((True, _END))

    def _deliver(self, entry: tuple[bool, Any]) -> None:
        if self.closed:
            return
        if entry[1] is _END or not entry[0]:
            self.closed = True
        if isinstance(self._items, asyncio.Queue):
            assert self._loop is not None
            if self._loop is _running_loop():
                self._items.put_nowait(entry)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._items.put_nowait, entry)
        else:
            self._items.put(entry)

    async def next_async(self) -> Any:
        assert isinstance(self._items, asyncio.Queue)
        ok, value = await self._items.get()
        if not ok:
            raise value
        return value

    def next_blocking(self) -> Any:
        assert isinstance(self._items, queue.SimpleQueue)
        ok, value = self._items.get()
        if not ok:
            raise value
        return value


class _Call:
    __slots__ = ("arrived", "sink", "values")

    def __init__(self, values: tuple[Any, ...], sink: _Sink, arrived: float) -> None:
        self.values = values
        self.sink = sink
        self.arrived = arrived


class _BatchQueue:
    """One method's pending calls on one event loop, and the task that forms batches."""

    def __init__(
        self,
        run_batch: Callable[[list[_Call]], Any],
        settings: _Settings,
        loop: asyncio.AbstractEventLoop,
        name: str = "batch",
    ) -> None:
        self.name = name  # the function's, for the batch-size metrics
        self._run_batch = run_batch
        self._settings = settings
        self._loop = loop
        self._pending: deque[_Call] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(settings.config.max_concurrent_batches)
        self._former: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    def put(self, values: tuple[Any, ...], sink: _Sink) -> None:
        """Queue a call (on this queue's loop)."""
        self._pending.append(_Call(values, sink, self._loop.time()))
        self._arrived.set()
        if self._former is None or self._former.done():
            self._former = self._loop.create_task(self._form_batches(), name="swell-batch-former")

    async def _form_batches(self) -> None:
        while True:
            self._drop_closed()
            if not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            await self._slots.acquire()
            batch = await self._collect()
            if not batch:
                self._slots.release()
                continue
            PROCESS.batch_formed(self.name, len(batch))
            task = self._loop.create_task(self._run(batch), name="swell-batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _collect(self) -> list[_Call]:
        """Wait until the batch is full or its oldest call has waited long enough."""
        while True:
            self._drop_closed()
            if not self._pending:
                return []
            if self._is_full():
                break
            deadline = self._pending[0].arrived + self._settings.config.batch_wait_timeout_s
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                break
        return self._take()

    def _drop_closed(self) -> None:
        """Callers that went away before their batch started are not computed."""
        if any(call.sink.closed for call in self._pending):
            self._pending = deque(call for call in self._pending if not call.sink.closed)

    def _size(self, calls: Sequence[_Call]) -> int:
        size_fn = self._settings.size_fn
        if size_fn is None:
            return len(calls)
        return int(size_fn([call.values[0] if call.values else None for call in calls]))

    def _is_full(self) -> bool:
        return self._size(self._pending) >= self._settings.config.max_batch_size

    def _take(self) -> list[_Call]:
        limit = self._settings.config.max_batch_size
        if self._settings.size_fn is None:
            count = min(limit, len(self._pending))
        else:
            count = 1  # an item larger than the limit still runs, alone
            while (
                count < len(self._pending) and self._size(list(self._pending)[: count + 1]) <= limit
            ):
                count += 1
        return [self._pending.popleft() for _ in range(count)]

    async def _run(self, batch: list[_Call]) -> None:
        try:
            await self._run_batch(batch)
        except BaseException as error:
            for call in batch:
                call.sink.fail(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self._slots.release()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_thread_loop: asyncio.AbstractEventLoop | None = None
_thread_loop_lock = threading.Lock()


def _batching_loop() -> asyncio.AbstractEventLoop:
    """The loop on which calls of sync batched methods wait for their batch."""
    global _thread_loop
    with _thread_loop_lock:
        if _thread_loop is None or _thread_loop.is_closed():
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="swell-batch-loop", daemon=True).start()
            _thread_loop = loop
        return _thread_loop


def _check_results(name: str, returned: Any, size: int) -> Sequence[Any]:
    if isinstance(returned, Sequence) and not isinstance(returned, str | bytes):
        results: Sequence[Any] = returned
    elif hasattr(returned, "__iter__") and not isinstance(returned, str | bytes | dict):
        results = list(returned)  # e.g. a numpy array: one element per input
    else:
        raise TypeError(
            f"@batch method {name!r} returned {type(returned).__name__}; it must return a "
            f"list with one result per input ({size} inputs)."
        )
    if len(results) != size:
        raise TypeError(
            f"@batch method {name!r} got {size} inputs but returned {len(results)} results; "
            "return exactly one result per input, in order."
        )
    return results


def _is_stop(item: Any) -> bool:
    return item is StopIteration or isinstance(item, StopIteration)


class _Batched:
    """Everything one decorated function needs: its signature, options and queues."""

    def __init__(self, func: Callable[..., Any], settings: _Settings) -> None:
        self.func = func
        self.name = getattr(func, "__qualname__", getattr(func, "__name__", "batch"))
        self.settings = settings
        self.signature = inspect.signature(func)
        for parameter in self.signature.parameters.values():
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise ConfigError(
                    f"@batch cannot batch {self.name!r}: it takes *{parameter.name}; give it "
                    "named parameters, each of which receives a list."
                )
        self.kind: str
        if inspect.isasyncgenfunction(func):
            self.kind = "asyncgen"
        elif inspect.isgeneratorfunction(func):
            self.kind = "gen"
        elif inspect.iscoroutinefunction(func):
            self.kind = "async"
        else:
            self.kind = "sync"
        self._function_queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _BatchQueue] = (
            weakref.WeakKeyDictionary()
        )

    def __reduce__(self) -> tuple[Any, ...]:
        """Queues, loops and tasks stay behind: a replica builds its own."""
        return (_Batched, (self.func, _Settings(self.settings.config, self.settings.size_fn)))

    # Splitting a call into the instance and its per-parameter values.

    def split(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, tuple[Any, ...]]:
        owner = None
        parameters = list(self.signature.parameters.values())
        if args and self._is_method_call(args[0]):
            owner, args = args[0], args[1:]
            parameters = parameters[1:]
        signature = self.signature.replace(parameters=parameters)
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"@batch method {self.name!r}: {error}") from None
        bound.apply_defaults()
        return owner, tuple(bound.arguments.values())

    def _is_method_call(self, first: Any) -> bool:
        name = getattr(self.func, "__name__", None)
        if name is None or inspect.isclass(first):
            return False
        attribute = inspect.getattr_static(type(first), name, None)
        # Compared by the _Batched it carries: a class shipped by value (cloudpickle) has a
        # new wrapper function, but pickle's memo keeps one _Batched per decorated function.
        return getattr(attribute, "_swell_batched", None) is self

    def queue_for(self, owner: Any, loop: asyncio.AbstractEventLoop) -> _BatchQueue:
        queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _BatchQueue]
        if owner is None:
            queues = self._function_queues
        else:
            per_owner = vars(owner).setdefault(_QUEUES_ATTRIBUTE, {})
            queues = per_owner.setdefault(id(self), weakref.WeakKeyDictionary())
        found = queues.get(loop)
        if found is None:
            found = _BatchQueue(
                functools.partial(self.run_batch, owner), self.settings, loop, self.name
            )
            queues[loop] = found
        return found

    # Running one batch.

    def _columns(self, owner: Any, batch: list[_Call]) -> tuple[list[Any], dict[str, Any]]:
        parameters = list(self.signature.parameters.values())
        if owner is not None:
            parameters = parameters[1:]
        positional: list[Any] = [] if owner is None else [owner]
        keywords: dict[str, Any] = {}
        for index, parameter in enumerate(parameters):
            column = [call.values[index] for call in batch]
            if parameter.kind is parameter.KEYWORD_ONLY:
                keywords[parameter.name] = column
            else:
                positional.append(column)
        return positional, keywords

    async def run_batch(self, owner: Any, batch: list[_Call]) -> None:
        args, kwargs = self._columns(owner, batch)
        loop = asyncio.get_running_loop()
        if self.kind == "async":
            results = _check_results(self.name, await self.func(*args, **kwargs), len(batch))
        elif self.kind == "sync":
            call = functools.partial(self.func, *args, **kwargs)
            results = _check_results(self.name, await loop.run_in_executor(None, call), len(batch))
        else:
            await self._run_generator(args, kwargs, batch)
            return
        for caller, result in zip(batch, results, strict=True):
            caller.sink.put(result)

    async def _run_generator(
        self, args: list[Any], kwargs: dict[str, Any], batch: list[_Call]
    ) -> None:
        async for outputs in self._outputs(args, kwargs):
            outputs = _check_results(self.name, outputs, len(batch))
            for call, item in zip(batch, outputs, strict=True):
                if _is_stop(item):
                    call.sink.end()
                else:
                    call.sink.put(item)
            if all(call.sink.closed for call in batch):
                break
        for call in batch:
            call.sink.end()

    async def _outputs(self, args: list[Any], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        produced = self.func(*args, **kwargs)
        if self.kind == "asyncgen":
            try:
                async for outputs in produced:
                    yield outputs
            finally:
                await produced.aclose()
            return
        loop = asyncio.get_running_loop()
        try:
            while True:
                outputs = await loop.run_in_executor(None, next, produced, _END)
                if outputs is _END:
                    return
                yield outputs
        finally:
            produced.close()


def _make_wrapper(batched: _Batched) -> Callable[..., Any]:
    func = batched.func

    if batched.kind == "async":

        async def call_async(*args: Any, **kwargs: Any) -> Any:
            owner, values = batched.split(args, kwargs)
            sink = _Sink(asyncio.get_running_loop())
            batched.queue_for(owner, asyncio.get_running_loop()).put(values, sink)
            try:
                return await sink.next_async()
            finally:
                sink.closed = True

        wrapper: Callable[..., Any] = call_async
    elif batched.kind == "asyncgen":

        async def stream_async(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
            owner, values = batched.split(args, kwargs)
            sink = _Sink(asyncio.get_running_loop())
            batched.queue_for(owner, asyncio.get_running_loop()).put(values, sink)
            try:
                while (item := await sink.next_async()) is not _END:
                    yield item
            finally:
                sink.closed = True

        wrapper = stream_async
    elif batched.kind == "sync":

        def call_blocking(*args: Any, **kwargs: Any) -> Any:
            sink = _submit_from_thread(batched, args, kwargs)
            try:
                return sink.next_blocking()
            finally:
                sink.closed = True

        wrapper = call_blocking
    else:

        def stream_blocking(*args: Any, **kwargs: Any) -> Iterator[Any]:
            sink = _submit_from_thread(batched, args, kwargs)
            try:
                while (item := sink.next_blocking()) is not _END:
                    yield item
            finally:
                sink.closed = True

        wrapper = stream_blocking

    functools.update_wrapper(wrapper, func)
    where = f"@batch options of {batched.name!r}"

    def set_max_batch_size(new_max_batch_size: int) -> None:
        """Change the batch size limit (e.g. in ``reconfigure``); applies to later batches."""
        batched.settings.update(where, max_batch_size=new_max_batch_size)

    def set_batch_wait_timeout_s(new_batch_wait_timeout_s: float) -> None:
        """Change how long a call may wait for its batch to fill; applies to later batches."""
        batched.settings.update(where, batch_wait_timeout_s=new_batch_wait_timeout_s)

    attributes = wrapper.__dict__
    attributes["set_max_batch_size"] = set_max_batch_size
    attributes["set_batch_wait_timeout_s"] = set_batch_wait_timeout_s
    attributes["get_max_batch_size"] = lambda: batched.settings.config.max_batch_size
    attributes["get_batch_wait_timeout_s"] = lambda: batched.settings.config.batch_wait_timeout_s
    attributes["_swell_batched"] = batched
    return wrapper


def _submit_from_thread(batched: _Batched, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Sink:
    """Queue a sync method's call on swell's batching loop; the caller blocks in its thread."""
    if _running_loop() is not None:
        raise RuntimeError(
            f"@batch method {batched.name!r} is sync, so it blocks until its batch is done and "
            "cannot be called from async code; make it `async def`, or call it from a sync "
            "method."
        )
    owner, values = batched.split(args, kwargs)
    sink = _Sink(None)
    loop = _batching_loop()
    done: concurrent.futures.Future[None] = concurrent.futures.Future()

    def enqueue() -> None:
        try:
            batched.queue_for(owner, loop).put(values, sink)
            done.set_result(None)
        except BaseException as error:
            done.set_exception(error)

    loop.call_soon_threadsafe(enqueue)
    done.result()
    return sink


def batch(
    _func: Callable[..., Any] | None = None,
    /,
    max_batch_size: int = 10,
    batch_wait_timeout_s: float = 0.01,
    max_concurrent_batches: int = 1,
    batch_size_fn: Callable[[list[Any]], int] | None = None,
) -> Any:
    """Batch calls of a function or method: ``@batch`` or ``@batch(max_batch_size=8, ...)``.

    Each parameter of the decorated function receives a list (one element per caller), and it
    returns (or, a generator, yields) a list with one element per caller.
    """
    config = validate_model(
        BatchConfig,
        {
            "max_batch_size": max_batch_size,
            "batch_wait_timeout_s": batch_wait_timeout_s,
            "max_concurrent_batches": max_concurrent_batches,
        },
        "@batch options",
    )
    if batch_size_fn is not None and not callable(batch_size_fn):
        raise ConfigError(
            f"@batch batch_size_fn must be a function from a list of inputs to an int, got "
            f"{type(batch_size_fn).__name__}."
        )

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(func):
            raise ConfigError(f"@batch decorates a function or method, not {type(func).__name__}.")
        return _make_wrapper(_Batched(func, _Settings(config, batch_size_fn)))

    if _func is not None:
        return decorate(_func)
    return decorate
