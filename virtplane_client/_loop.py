"""How the sync Client runs the async one: a private event loop on a thread of
its own, and descriptors that turn an async method of the core into a
blocking method (`Blocking`) or an async iterator into an iterator
(`BlockingIter`) of the sync facade, with the same signature and types."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

Core = TypeVar("Core")
P = ParamSpec("P")
T = TypeVar("T")
_DONE = object()


class LoopThread:
    """An event loop running on a daemon thread, until close()."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="virtplane-client", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs coro on the loop and blocks until it is done."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:  # e.g. KeyboardInterrupt while blocked: stop it too
            future.cancel()
            raise

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        """items, pulled one by one on the loop; closed with the iterator."""

        async def pull() -> object:
            try:
                return await anext(items)
            except StopAsyncIteration:
                return _DONE

        async def close() -> None:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

        try:
            while (item := self.run(pull())) is not _DONE:
                yield item  # type: ignore[misc]
        finally:
            if not self._loop.is_closed():  # else the client closed it, and its streams
                self.run(close())

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


class Synced(Generic[Core]):
    """Base of a sync facade: the async core it runs, the loop it runs it on."""

    def __init__(self, core: Core, loop: LoopThread) -> None:
        self._core = core
        self._loop = loop


class Blocking(Generic[Core, P, T]):
    """`start = Blocking(AsyncVms.start)` in a Synced[AsyncVms] class: a
    blocking `start` with AsyncVms.start's parameters and result."""

    def __init__(self, method: Callable[Concatenate[Core, P], Coroutine[Any, Any, T]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: Synced[Core], owner: type[Any]) -> Callable[P, T]: ...
    def __get__(self, obj: Synced[Core] | None, owner: type[Any]) -> Self | Callable[P, T]:
        if obj is None:
            return self
        method, core, loop = self._method, obj._core, obj._loop

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> T:
            return loop.run(method(core, *args, **kwargs))

        return call


class BlockingIter(Generic[Core, P, T]):
    """As Blocking, for a method that returns an async iterator: an iterator."""

    def __init__(self, method: Callable[Concatenate[Core, P], AsyncIterator[T]]) -> None:
        self._method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...
    @overload
    def __get__(self, obj: Synced[Core], owner: type[Any]) -> Callable[P, Iterator[T]]: ...
    def __get__(
        self, obj: Synced[Core] | None, owner: type[Any]
    ) -> Self | Callable[P, Iterator[T]]:
        if obj is None:
            return self
        method, core, loop = self._method, obj._core, obj._loop

        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> Iterator[T]:
            return loop.iterate(method(core, *args, **kwargs))

        return call
