"""The bridge from a blocking generator (the model's tokens, the agent's events) to ``async for``.

Generation runs in a worker thread so the event loop keeps serving; the items come back through an
asyncio queue as they are produced. One helper, used by :meth:`MultimodalCodette.stream` and by the
server's worker, so both stop the thread the same way: when the consumer leaves (a ``break``, a
cancelled task, a closed connection) or a deadline passes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TypeVar

T = TypeVar("T")


async def iterate_in_thread(make: Callable[[threading.Event], Iterator[T]], deadline: float | None = None,
                            late: Callable[[], BaseException] | None = None) -> AsyncIterator[T]:
    """Items of ``make(stop)``, produced in a thread, as they come.

    ``stop`` is set once the consumer leaves or ``deadline`` (a ``time.monotonic()`` value) passes, and
    the thread stops at its next item; ``make``'s iterator may watch ``stop`` to stop sooner. Past the
    deadline ``late()`` is raised (default :class:`TimeoutError`). Errors raised in the thread are raised
    here. Leaving waits for the thread to end, even under cancellation, so whatever it holds (a model, a
    lock) is free afterwards: close this generator (``contextlib.aclosing``) inside any resource it uses.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()
    end = object()

    def work() -> None:
        it = None
        try:
            it = make(stop)
            for item in it:
                if stop.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # handed to the consumer, raised there
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        finally:
            close = getattr(it, "close", None)
            if callable(close):
                close()
            loop.call_soon_threadsafe(queue.put_nowait, end)

    def overdue() -> BaseException:
        return late() if late else TimeoutError("the generation ran past its deadline")

    worker = loop.run_in_executor(None, work)
    try:
        while True:
            if deadline is None:
                item = await queue.get()
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise overdue()
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=left)
                except asyncio.TimeoutError:
                    raise overdue() from None
            if item is end:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        await _finish(worker)


async def _finish(worker: asyncio.Future) -> None:
    """Wait for the thread to end, even when this task is being cancelled (then re-cancel)."""
    cancelled = False
    while not worker.done():
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            cancelled = True
        except BaseException:  # the thread's own errors were handed over already
            break
    if cancelled:
        raise asyncio.CancelledError
