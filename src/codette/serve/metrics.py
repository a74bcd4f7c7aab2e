"""Prometheus metrics of ``codette serve --metrics``, served at ``GET /metrics`` in the text format.

Requests by route and status (counted outside the guard, so refused requests count too), refusals by
reason, the queue, tokens in and out, time to first token and time per output token. Each app has its
own :class:`~prometheus_client.CollectorRegistry` rather than the library's global one, so several
servers in one process (the tests) never share or clash over counters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# The statuses that mean "refused before any generation", by the reason a dashboard wants to see.
REJECTED = {401: "api_key", 403: "host_or_origin", 413: "body_too_large", 415: "not_json", 503: "queue_full"}
# Seconds: CPU generation of small models runs from milliseconds (first token) to minutes (queued requests).
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class ServeMetrics:
    """The server's metrics, registered in a registry of their own."""

    def __init__(self, worker: Any, routes: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self.routes = set(routes)  # label values: a known route's path, else "other" (bounded cardinality)
        reg = self.registry
        self.requests = Counter("codette_requests", "HTTP requests answered, by route and status code",
                                ["endpoint", "status"], registry=reg)
        self.rejected = Counter("codette_rejected_requests", "Requests refused without generating (bad Host or "
                                "Origin, API key, body size or type, full queue), by reason", ["reason"], registry=reg)
        Gauge("codette_queue_depth", "Requests waiting for the model", registry=reg).set_function(
            lambda: worker.waiting)
        Gauge("codette_generating", "Requests generating now (0 or 1)", registry=reg).set_function(
            lambda: worker.running)
        self.prompt_tokens = Counter("codette_prompt_tokens", "Prompt tokens read by the model", registry=reg)
        self.completion_tokens = Counter("codette_completion_tokens", "Tokens generated", registry=reg)
        self.ttft = Histogram("codette_time_to_first_token_seconds", "From the request's arrival (queue wait "
                              "included) to the reply's first piece", buckets=TTFT_BUCKETS, registry=reg)
        self.per_token = Histogram("codette_time_per_output_token_seconds", "A request's mean time per generated "
                                   "token after the first", buckets=TOKEN_BUCKETS, registry=reg)

    def observe(self, timing: Any) -> None:
        """One generation has ended (a :class:`~codette.serve.engine.Timing`)."""
        if timing.prompt_tokens:
            self.prompt_tokens.inc(timing.prompt_tokens)
        if timing.completion_tokens:
            self.completion_tokens.inc(timing.completion_tokens)
        if timing.first_at is not None:
            self.ttft.observe(timing.first_at - timing.start)
            n = timing.completion_tokens or 0
            if n > 1 and timing.end_at is not None:
                self.per_token.observe((timing.end_at - timing.first_at) / (n - 1))

    def count(self, path: str, status: int) -> None:
        self.requests.labels(path if path in self.routes else "other", str(status)).inc()
        if status in REJECTED:
            self.rejected.labels(REJECTED[status]).inc()

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def counting(self, app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """``app`` (the guarded application) with every HTTP answer counted by route and status."""

        async def counted_app(scope: dict, receive: Callable[[], Awaitable[dict]],
                              send: Callable[[dict], Awaitable[None]]) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            status = 500  # what the client gets if the app fails before answering

            async def noted(message: dict) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await app(scope, receive, noted)
            finally:
                self.count(scope.get("path", ""), status)

        return counted_app
