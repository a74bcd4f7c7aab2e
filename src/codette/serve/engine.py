"""The served model as every generating route sees it: its context, the reply limit a request gets, and
one timed generation through the queue.

OpenAI's chat and text completions and Ollama's chat and generate all go through
:meth:`ServedModel.generate`, so they share one queue, one deadline rule and one clock. The clock
(:class:`Timing`) gives Ollama its duration fields and ``/metrics`` its latency histograms.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from codette.errors import CodetteError
from codette.serve.completions import Collected
from codette.serve.worker import Busy, DeadlineExceeded, ModelWorker

log = logging.getLogger(__name__)
Make = Callable[[threading.Event], Iterator[Any]]


class ContextTooLong(CodetteError):
    """The prompt leaves no room for a reply; ``param`` names the request field that holds it."""

    def __init__(self, message: str, param: str = "messages") -> None:
        super().__init__(message)
        self.param = param


class NotSupported(CodetteError):
    """The backend cannot do what the route needs (raw text, a tokenizer): a 501, not the client's fault."""


@dataclass
class Timing:
    """One request's clock (``time.perf_counter`` seconds): accepted, given the model, first piece, end;
    and its token counts once the backend reports them."""

    start: float = field(default_factory=time.perf_counter)
    model_at: float | None = None
    first_at: float | None = None
    end_at: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def piece(self, chunk: Any) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        if chunk.prompt_tokens is not None:
            self.prompt_tokens = chunk.prompt_tokens
        if chunk.completion_tokens is not None:
            self.completion_tokens = chunk.completion_tokens

    def nanoseconds(self) -> dict[str, int]:
        """Ollama's durations: the whole request, the wait for the model, the prompt (up to the first piece)
        and the reply (from the first piece on)."""
        end = self.end_at or time.perf_counter()
        model_at = self.model_at or end
        first = self.first_at or end

        def ns(seconds: float) -> int:
            return max(0, int(seconds * 1e9))

        return {"total_duration": ns(end - self.start), "load_duration": ns(model_at - self.start),
                "prompt_eval_duration": ns(first - model_at), "eval_duration": ns(end - first)}


class _Timed:
    """The backend's pieces, noted on a :class:`Timing` as they pass (a plain async iterator: closing the
    generation is the inner iterator's job, done by :meth:`ServedModel.generate`)."""

    def __init__(self, pieces: AsyncIterator[Any], timing: Timing) -> None:
        self._pieces, self._timing = pieces, timing

    def __aiter__(self) -> _Timed:
        return self

    async def __anext__(self) -> Any:
        piece = await self._pieces.__anext__()
        self._timing.piece(piece)
        return piece


class ServedModel:
    """The backend behind its queue (:class:`ModelWorker`), with the context the server allows
    (the model's, cut by ``--ctx-size``) and the optional metrics every generation reports to."""

    def __init__(self, backend: Any, worker: ModelWorker, ctx_size: int | None = None,
                 metrics: Any | None = None) -> None:
        if ctx_size is not None and ctx_size < 2:
            raise CodetteError(f"--ctx-size must be 2 tokens or more, got {ctx_size}")
        self.backend, self.worker, self.metrics = backend, worker, metrics
        own = getattr(backend, "context_length", None)
        known = [c for c in (own if isinstance(own, int) else None, ctx_size) if c is not None]
        self.context: int | None = min(known) if known else None
        counter = getattr(backend, "count_tokens", None)
        self.counter: Callable[..., int] | None = counter if callable(counter) else None

    def can(self, method: str) -> bool:
        """Whether the backend has ``method`` (the raw-text ones: tokenize, detokenize, stream_tokens)."""
        return callable(getattr(self.backend, method, None))

    def need(self, method: str, what: str) -> Callable[..., Any]:
        """The backend's ``method``, or :class:`NotSupported` naming ``what`` cannot be done."""
        if not self.can(method):
            raise NotSupported(f"{what} needs a local model (a checkpoint or GGUF); the "
                               f"{getattr(self.backend, 'name', 'served')} backend has no tokenizer here")
        return getattr(self.backend, method)

    def check_constraint(self, sampling: Any, tools: list[dict] | None) -> None:
        """Refuse now, before a stream's headers go out, a constraint that cannot be had: a ``tool_choice``
        naming no offered tool, or a schema the backend's grammar cannot express
        (:class:`~codette.backends.constraints.ConstraintError`, a 400 naming the field)."""
        from codette.backends.constraints import constraint_for

        constraint_for(sampling, tools)
        if self.can("check_constraint"):
            self.backend.check_constraint(sampling, tools)

    def count_text(self, text: str) -> int | None:
        """Tokens of ``text`` by the backend's tokenizer (None without one): a reply's count when a stop
        sequence ended the generation before the backend reported it."""
        if not text:
            return 0
        return len(self.backend.tokenize(text)) if self.can("tokenize") else None

    def reply_limit(self, prompt_tokens: int | None, wanted: int | None, default: int,
                    context: int | None = None, param: str = "messages") -> int:
        """``wanted`` tokens (``default`` when None), cut to what the context (this server's, or the smaller
        ``context`` a request asks for) leaves after the prompt; :class:`ContextTooLong` when nothing is left."""
        limits = [c for c in (self.context, context) if c is not None]
        ctx = min(limits) if limits else None
        limit = wanted or default
        if prompt_tokens is not None and ctx is not None:
            if prompt_tokens >= ctx:
                advice = "send fewer or shorter messages or tools" if param == "messages" else "send a shorter prompt"
                raise ContextTooLong(f"the prompt is {prompt_tokens} tokens and this model's context is {ctx} "
                                     f"tokens; {advice}", param)
            limit = min(limit, ctx - prompt_tokens)
        return limit

    @contextlib.asynccontextmanager
    async def generate(self, make: Make, timing: Timing | None = None,
                       _timed: bool = True) -> AsyncIterator[AsyncIterator[Any]]:
        """Wait for the model (or :class:`~codette.serve.worker.Busy` at once when the queue is full), then
        the pieces of ``make(stop)`` as they come, timed. Leaving the block (a stop sequence, a disconnect)
        stops the generation and frees the model before the next request starts."""
        timing = timing or Timing()
        deadline = self.worker.deadline()
        try:
            async with self.worker.slot(deadline):
                timing.model_at = time.perf_counter()
                async with contextlib.aclosing(self.worker.iterate(make, deadline)) as pieces:
                    yield _Timed(pieces, timing) if _timed else pieces
        finally:
            timing.end_at = time.perf_counter()
            if self.metrics is not None:
                self.metrics.observe(timing)

    async def collect(self, make: Make, stops: list[str] | None, timing: Timing | None = None) -> Collected:
        """The whole reply (not streamed), cut at the first stop sequence.

        The pieces are gathered in the generation thread and handed over once: a wake-up of the event
        loop for every token would take a core from the model's own threads on a small machine."""
        timing = timing or Timing()

        def whole(stop: threading.Event) -> Iterator[Collected]:
            reply = Collected(stops)
            pieces = make(stop)
            try:
                for piece in pieces:
                    timing.piece(piece)
                    reply.add(piece)
                    if reply.stopped or stop.is_set():  # a stop sequence, a deadline, a client gone
                        break
            finally:
                close = getattr(pieces, "close", None)
                if callable(close):
                    close()
            yield reply

        async with self.generate(whole, timing, _timed=False) as replies:
            reply = await replies.__anext__()
        reply.end()
        return reply


def stream_failure(exc: BaseException) -> tuple[str, str]:
    """``(message, code)`` for a failure after a stream's headers went out (it ends with an error event or
    line instead); a failure that is not the request's (a bug, a broken runtime) is logged with its stack."""
    if not isinstance(exc, (CodetteError, ValueError)):
        log.error("the generation failed", exc_info=exc)
    code = "server_busy" if isinstance(exc, Busy) else "timeout" if isinstance(exc, DeadlineExceeded) \
        else "generation_failed"
    return str(exc), code
