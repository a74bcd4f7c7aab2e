"""The HTTP plumbing the ``openai`` and ``ollama`` backends share: timeouts, retries, clear errors.

A server that is down (connection refused, connect timeout) or answers 5xx is retried with
exponential backoff (``backoff * 2**try`` seconds); a read timeout is not retried, because the
server may still be generating. Every error is a :class:`~codette.errors.CodetteError` that names
the URL and, for HTTP errors, the status and the server's own message.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from codette.backends.base import reply_text
from codette.errors import CodetteError

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_TIMEOUT_S = 120.0
DEFAULT_RETRIES = 2
DEFAULT_BACKOFF_S = 0.5


class HTTPStatusError(CodetteError):
    """The server answered with an error status (``status``); the message names the URL and the server's words."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def server_message(response: httpx.Response) -> str:
    """The error text a server put in its body (OpenAI ``error.message``, Ollama ``error``), shortened."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return response.text.strip()[:300]
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            err = err.get("message", err)
        return (err if isinstance(err, str) else json.dumps(err))[:300]
    return json.dumps(body)[:300]


class HTTPClient:
    """POST JSON to one server, whole or as a stream of lines, with retries before the first byte."""

    def __init__(self, base_url: str, *, connect_timeout: float = DEFAULT_CONNECT_TIMEOUT_S,
                 read_timeout: float = DEFAULT_READ_TIMEOUT_S, retries: int = DEFAULT_RETRIES,
                 backoff: float = DEFAULT_BACKOFF_S, headers: dict[str, str] | None = None) -> None:
        if retries < 0:
            raise CodetteError(f"retries must be 0 or more, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.read_timeout = read_timeout
        self.retries = retries
        self.backoff = backoff
        self._client = httpx.Client(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout), headers=headers or {})

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    @contextmanager
    def _open(self, method: str, path: str, body: Any | None, stream: bool) -> Iterator[httpx.Response]:
        url = self.url(path)
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                request = self._client.build_request(method, url, json=body)
                response = self._client.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                if last:
                    tries = self.retries + 1
                    raise CodetteError(f"cannot reach {url}: {exc or type(exc).__name__} "
                                       f"(tried {tries} time{'s' if tries > 1 else ''})") from None
                log.warning("cannot reach %s (%s); retrying", url, exc)
                time.sleep(self.backoff * 2 ** attempt)
                continue
            except httpx.TimeoutException:
                raise CodetteError(f"{url} did not answer within {self.read_timeout:g} s (read timeout)") from None
            except httpx.HTTPError as exc:
                raise CodetteError(f"{url}: {type(exc).__name__}: {exc}") from None
            if response.status_code >= 500 and not last:
                response.read()
                log.warning("%s answered HTTP %d (%s); retrying", url, response.status_code, server_message(response))
                response.close()
                time.sleep(self.backoff * 2 ** attempt)
                continue
            try:
                if response.status_code >= 400:
                    response.read()
                    raise HTTPStatusError(f"{url} answered HTTP {response.status_code}: {server_message(response)}",
                                          response.status_code)
                yield response
            finally:
                response.close()
            return

    def post_json(self, path: str, body: Any) -> Any:
        """The decoded JSON answer to a POST of ``body``."""
        with self._open("POST", path, body, stream=False) as response:
            return self._json(response.text, self.url(path))

    def get_json(self, path: str) -> Any:
        with self._open("GET", path, None, stream=False) as response:
            return self._json(response.text, self.url(path))

    def post_lines(self, path: str, body: Any) -> Iterator[str]:
        """The non-empty lines of a streamed answer (NDJSON or server-sent events), as they arrive."""
        url = self.url(path)
        with self._open("POST", path, body, stream=True) as response:
            try:
                for line in response.iter_lines():
                    if line.strip():
                        yield line
            except httpx.TimeoutException:
                raise CodetteError(f"{url} stopped sending within {self.read_timeout:g} s (read timeout)") from None
            except httpx.HTTPError as exc:
                raise CodetteError(f"{url}: the stream broke off ({type(exc).__name__}: {exc})") from None

    @staticmethod
    def _json(text: str, url: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CodetteError(f"{url} answered with invalid JSON ({exc.msg}): {text[:200]!r}") from None

    def close(self) -> None:
        self._client.close()


def decode_line(line: str, url: str) -> dict:
    """One NDJSON line (or SSE ``data:`` payload) as a JSON object; a clear error otherwise."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise CodetteError(f"{url} sent a line that is not JSON ({exc.msg}): {line[:200]!r}") from None
    if not isinstance(obj, dict):
        raise CodetteError(f"{url} sent {type(obj).__name__} where a JSON object was expected: {line[:200]!r}")
    return obj


def call_refs(messages: list[dict]) -> list[tuple[str, str] | None]:
    """For each message, the (call id, tool name) a ``tool`` message answers; None for other messages.

    Codette's conversations pair results with calls by order (the chat template needs no ids);
    OpenAI wants ``tool_call_id`` and Ollama ``tool_name``, so both are derived here: the k-th call
    of the assistant message at index i gets the id ``call_<i>_<k>``.
    """
    refs: list[tuple[str, str] | None] = []
    pending: list[tuple[str, str]] = []
    for i, m in enumerate(messages):
        if m.get("role") == "assistant":
            pending = [(f"call_{i}_{k}", call_name(tc)) for k, tc in enumerate(m.get("tool_calls") or [])]
            refs.append(None)
        elif m.get("role") == "tool":
            refs.append(pending.pop(0) if pending else (f"call_{i}", ""))
        else:
            refs.append(None)
    return refs


def call_name(tool_call: dict) -> str:
    """The function name of an OpenAI-style ``tool_calls`` entry (nested under ``function`` or flat)."""
    f = tool_call.get("function", tool_call)
    return str(f.get("name", ""))


def call_arguments(tool_call: dict) -> Any:
    f = tool_call.get("function", tool_call)
    return f.get("arguments", {})


class HTTPChatBackend:
    """What the HTTP backends share: ``chat`` is the non-streamed reply as text (structured calls written
    as markup), ``url`` the chat endpoint. Subclasses set ``CHAT_PATH`` and ``http`` and define ``complete``
    and ``stream``."""

    CHAT_PATH = ""
    http: HTTPClient

    @property
    def url(self) -> str:
        return self.http.url(self.CHAT_PATH)

    def complete(self, messages: list[dict], tools: list[dict] | None = None, sampling: Any = None) -> Any:
        raise NotImplementedError

    def chat(self, messages: list[dict], tools: list[dict] | None = None, sampling: Any = None) -> str:
        return reply_text(self.complete(messages, tools, sampling))

    def close(self) -> None:
        self.http.close()
