"""Ollama's native ``POST /api/chat`` as a backend: ``tools``, ``tool_calls`` and NDJSON streaming.

Request and answer follow Ollama's API reference (docs/api.md in the Ollama repository): the
request carries ``model``, ``messages``, ``tools``, ``stream``, ``format`` (when the sampling asks
for JSON: Ollama holds decoding to it; its API has no ``tool_choice``, so calls are not held) and
``options`` (``temperature``, ``top_k``, ``top_p``, ``seed``, ``num_predict``); a streamed answer is
one JSON object per line, each with ``message.content`` (and ``message.tool_calls`` when the model
calls a tool, arguments as an object), the last one with
``done: true``, ``done_reason``, ``prompt_eval_count`` and ``eval_count``. An error is
``{"error": "..."}``, as the body of a 4xx/5xx or as a line of the stream. The host comes from
``OLLAMA_HOST`` as Ollama itself reads it (``host``, ``host:port`` or a URL; default
``127.0.0.1:11434``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

from codette.backends.base import Chunk, Reply, SamplingConfig, collect
from codette.backends.http import (HTTPChatBackend, HTTPClient, HTTPStatusError, call_arguments, call_name, call_refs,
                                   decode_line)
from codette.errors import CodetteError

DEFAULT_HOST = "http://127.0.0.1:11434"


def ollama_host(value: str | None = None) -> str:
    """``OLLAMA_HOST`` (or ``value``) as a base URL: scheme and port 11434 added when missing."""
    raw = (value if value is not None else os.environ.get("OLLAMA_HOST", "")).strip().rstrip("/")
    if not raw:
        return DEFAULT_HOST
    if "://" not in raw:
        raw = "http://" + raw
    scheme, rest = raw.split("://", 1)
    hostport = rest.split("/", 1)[0]
    if ":" not in hostport.rsplit("]", 1)[-1]:
        rest = hostport + ":11434" + rest[len(hostport):]
    return f"{scheme}://{rest}"


def wire_messages(messages: list[dict]) -> list[dict]:
    """Codette's messages as Ollama takes them: call arguments as objects, results with ``tool_name``."""
    out = []
    for m, ref in zip(messages, call_refs(messages)):
        msg: dict[str, Any] = {"role": m["role"], "content": m.get("content") or ""}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"function": {"name": call_name(tc), "arguments": _as_object(call_arguments(tc))}}
                                 for tc in m["tool_calls"]]
        if ref is not None and ref[1]:
            msg["tool_name"] = ref[1]
        out.append(msg)
    return out


def _as_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


class OllamaBackend(HTTPChatBackend):
    """One model of an Ollama server (``ollama create codette -f Modelfile`` makes one from our GGUF)."""

    name = "ollama"
    CHAT_PATH = "api/chat"

    def __init__(self, model: str, host: str | None = None, context_length: int | None = None,
                 **http: Any) -> None:
        if not model or not isinstance(model, str):
            raise CodetteError("an Ollama backend needs a model name (e.g. 'codette')")
        self.model = model
        self.host = ollama_host(host)
        self.http = HTTPClient(self.host, **http)
        self.context_length = context_length
        self.step = None

    def has_model(self) -> bool:
        """Whether the server knows the model (``POST /api/show``); CodetteError when it cannot be reached."""
        try:
            self.http.post_json("api/show", {"model": self.model})
        except HTTPStatusError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def _body(self, messages: list[dict], tools: list[dict] | None, sampling: SamplingConfig,
              stream: bool) -> dict[str, Any]:
        options: dict[str, Any] = {"temperature": max(0.0, sampling.temperature), "top_p": sampling.top_p,
                                   "num_predict": sampling.max_new_tokens}
        if sampling.top_k:
            options["top_k"] = sampling.top_k
        if sampling.seed is not None:
            options["seed"] = sampling.seed
        body: dict[str, Any] = {"model": self.model, "messages": wire_messages(messages), "stream": stream,
                                "options": options}
        if tools:
            body["tools"] = tools
        if sampling.response_format is not None:
            body["format"] = sampling.response_format  # Ollama's own field: "json" or a JSON schema
        return body

    def _chunk(self, obj: dict) -> Chunk:
        if "error" in obj:
            raise CodetteError(f"{self.url} sent an error: {obj['error']}")
        msg = obj.get("message") or {}
        calls = [{"name": call_name(tc), "arguments": call_arguments(tc)} for tc in msg.get("tool_calls") or []]
        done = bool(obj.get("done"))
        return Chunk(msg.get("content") or "", calls, obj.get("prompt_eval_count") if done else None,
                     obj.get("eval_count") if done else None, (obj.get("done_reason") or "stop") if done else None)

    def complete(self, messages: list[dict], tools: list[dict] | None = None,
                 sampling: SamplingConfig | None = None) -> Reply:
        data = self.http.post_json("api/chat", self._body(messages, tools, sampling or SamplingConfig(), False))
        if not isinstance(data, dict):
            raise CodetteError(f"{self.url} answered {type(data).__name__}, expected a JSON object")
        return collect([self._chunk(data)])

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        body = self._body(messages, tools, sampling or SamplingConfig(), True)
        for line in self.http.post_lines("api/chat", body):
            chunk = self._chunk(decode_line(line, self.url))
            yield chunk
            if chunk.finish_reason is not None:
                return
