"""One model, many requests: a bounded queue in front of it, a deadline on each request, and a bridge
that runs the (blocking) generation in a thread and stops it when the client goes away.

A backend serves one generation at a time (llama.cpp's context is not thread-safe, and two torch
generations would only halve each other's speed), so requests wait for :meth:`ModelWorker.slot`.
At most ``max_queue`` wait; the next one is refused at once (:class:`Busy`, a 503 with
``Retry-After``) instead of piling up. The slot is held until the generation thread has really
finished, so a cancelled request never overlaps the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

from codette.agent.threads import iterate_in_thread
from codette.errors import CodetteError

log = logging.getLogger(__name__)
T = TypeVar("T")


class Busy(CodetteError):
    """Every queue place is taken."""


class DeadlineExceeded(CodetteError):
    """The request ran past its deadline (waiting or generating)."""


class ModelWorker:
    """The gate in front of one backend: one request generates, at most ``max_queue`` wait."""

    def __init__(self, backend: Any, max_queue: int = 8, timeout_s: float = 300.0) -> None:
        if max_queue < 0:
            raise CodetteError(f"--max-queue must be 0 or more, got {max_queue}")
        if timeout_s <= 0:
            raise CodetteError(f"--timeout must be more than 0 seconds, got {timeout_s}")
        self.backend = backend
        self.max_queue = max_queue
        self.timeout_s = timeout_s
        self._gate: asyncio.Lock | None = None
        self.waiting = 0
        self.running = 0

    def deadline(self) -> float:
        return time.monotonic() + self.timeout_s

    def check_room(self) -> None:
        """Refuse now (:class:`Busy`) when a new request could only wait beyond the queue."""
        # Counted, not read off the lock: a burst of requests all pass before the first acquires it.
        if self.waiting + self.running > self.max_queue:
            raise Busy(f"the server is busy: {self.running} request generating and {self.waiting} waiting "
                       f"(the queue holds {self.max_queue}); try again shortly")

    @contextlib.asynccontextmanager
    async def slot(self, deadline: float) -> AsyncIterator[None]:
        """Wait for the model (or fail at once with :class:`Busy` when the queue is full)."""
        if self._gate is None:
            self._gate = asyncio.Lock()
        self.check_room()
        self.waiting += 1
        try:
            await asyncio.wait_for(self._gate.acquire(), timeout=max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            raise DeadlineExceeded(f"the request waited in the queue past its {self.timeout_s:g} s deadline") from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            self._gate.release()

    def iterate(self, make: Callable[[threading.Event], Iterator[T]], deadline: float) -> AsyncIterator[T]:
        """Items of ``make(stop)``, produced in a thread (:func:`codette.agent.threads.iterate_in_thread`);
        past ``deadline`` the thread stops and :class:`DeadlineExceeded` is raised. Close the result with
        ``contextlib.aclosing`` inside :meth:`slot`, so the slot is released only once the thread has ended."""
        return iterate_in_thread(make, deadline, lambda: DeadlineExceeded(
            f"the request ran past its {self.timeout_s:g} s deadline"))
