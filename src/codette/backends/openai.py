"""Any OpenAI-compatible ``/v1/chat/completions`` server as a backend.

``python -m llama_cpp.server``, llama.cpp's ``llama-server``, vLLM and Ollama's ``/v1`` all speak
it. The tools go in the request's ``tools`` (the server's chat template renders them: for a Codette
GGUF that is the template stored in the file); the reply may come back as structured
``tool_calls`` or as ``<tool_call>`` markup in the text, and the agent accepts both. Streaming
uses server-sent events (``data: {...}`` lines, ``data: [DONE]`` at the end).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from codette.backends.base import Chunk, Reply, SamplingConfig, arguments_text
from codette.backends.http import HTTPChatBackend, HTTPClient, call_arguments, call_name, call_refs, decode_line
from codette.errors import CodetteError

log = logging.getLogger(__name__)


def api_base(url: str) -> str:
    """``http://host:port`` or ``http://host:port/v1`` -> ``http://host:port/v1``."""
    url = url.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if url.endswith(tail):
            url = url[: -len(tail)]
    return url if url.endswith("/v1") else url + "/v1"


def wire_messages(messages: list[dict]) -> list[dict]:
    """Codette's messages in OpenAI's wire form: call ids, arguments as JSON strings."""
    out = []
    for i, (m, ref) in enumerate(zip(messages, call_refs(messages))):
        msg: dict[str, Any] = {"role": m["role"], "content": m.get("content")}
        if m.get("tool_calls"):
            msg["tool_calls"] = [{"id": f"call_{i}_{k}", "type": "function",
                                  "function": {"name": call_name(tc), "arguments": arguments_text(call_arguments(tc))}}
                                 for k, tc in enumerate(m["tool_calls"])]
        if ref is not None:
            msg["tool_call_id"] = ref[0]
        out.append(msg)
    return out


class OpenAIBackend(HTTPChatBackend):
    """``POST {base_url}/chat/completions``; ``model=None`` asks ``GET /v1/models`` for the served one."""

    name = "openai"
    CHAT_PATH = "chat/completions"

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None,
                 context_length: int | None = None, **http: Any) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise CodetteError(f"an OpenAI-compatible server URL must start with http:// or https://, got {base_url!r}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self.http = HTTPClient(api_base(base_url), headers=headers, **http)
        self.model = model
        self.context_length = context_length
        self.step = None

    def served_model(self) -> str:
        """The model name to send: the one given, else the first of ``GET /v1/models``."""
        if self.model is None:
            data = self.http.get_json("models")
            models = data.get("data") if isinstance(data, dict) else None
            if not models or not isinstance(models[0], dict) or "id" not in models[0]:
                raise CodetteError(f"{self.http.url('models')} lists no model; pass the model name explicitly")
            self.model = str(models[0]["id"])
        return self.model

    def _body(self, messages: list[dict], tools: list[dict] | None, sampling: SamplingConfig,
              stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.served_model(), "messages": wire_messages(messages),
                                "max_tokens": sampling.max_new_tokens, "temperature": max(0.0, sampling.temperature),
                                "top_p": sampling.top_p, "stream": stream}
        if sampling.top_k:
            body["top_k"] = sampling.top_k  # not in OpenAI's API; llama.cpp and vLLM accept it
        if sampling.seed is not None:
            body["seed"] = sampling.seed
        if tools:
            body["tools"] = tools
            # OpenAI refuses tool_choice without tools; "auto" is its default, sent anyway so a server that
            # constrains calls (llama-server, vLLM, `codette serve`) knows it is asked to
            if sampling.tool_choice is not None:
                body["tool_choice"] = sampling.tool_choice
            if not sampling.parallel_tool_calls:
                body["parallel_tool_calls"] = False
        if sampling.response_format == "json":
            body["response_format"] = {"type": "json_object"}
        elif sampling.response_format is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "reply", "schema": sampling.response_format}}
        if stream:
            body["stream_options"] = {"include_usage": True}  # token counts in the last event, where supported
        return body

    def complete(self, messages: list[dict], tools: list[dict] | None = None,
                 sampling: SamplingConfig | None = None) -> Reply:
        """One non-streamed completion."""
        data = self.http.post_json("chat/completions", self._body(messages, tools, sampling or SamplingConfig(), False))
        try:
            choice = data["choices"][0]
            message = choice["message"]
        except (KeyError, IndexError, TypeError):
            raise CodetteError(f"{self.url} answered without choices[0].message: {json.dumps(data)[:200]}") from None
        calls = [{"name": call_name(tc), "arguments": call_arguments(tc)} for tc in message.get("tool_calls") or []]
        usage = data.get("usage") or {}
        return Reply(message.get("content") or "", calls, usage.get("prompt_tokens"), usage.get("completion_tokens"),
                     choice.get("finish_reason"))

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        body = self._body(messages, tools, sampling or SamplingConfig(), True)
        calls: dict[int, dict[str, list[str]]] = {}  # pieces joined at the end: += on a dict's str copies it
        usage: dict[str, Any] = {}
        reason = None
        for line in self.http.post_lines("chat/completions", body):
            if not line.startswith("data:"):
                continue  # SSE comments, event names, keep-alives
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            obj = decode_line(payload, self.url)
            if "error" in obj:
                err = obj["error"]
                raise CodetteError(f"{self.url} sent an error: {err.get('message', err) if isinstance(err, dict) else err}")
            usage = obj.get("usage") or usage
            for choice in obj.get("choices") or []:
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield Chunk(delta["content"])
                for tc in delta.get("tool_calls") or []:
                    slot = calls.setdefault(int(tc.get("index", len(calls))), {"name": [], "arguments": []})
                    f = tc.get("function") or {}
                    slot["name"].append(f.get("name") or "")
                    args = f.get("arguments")
                    slot["arguments"].append(args if isinstance(args, str) else json.dumps(args) if args else "")
                reason = choice.get("finish_reason") or reason
        yield Chunk("", [{k: "".join(v) for k, v in calls[i].items()} for i in sorted(calls)],
                    usage.get("prompt_tokens"), usage.get("completion_tokens"), reason)


__all__ = ["OpenAIBackend", "api_base", "wire_messages"]
