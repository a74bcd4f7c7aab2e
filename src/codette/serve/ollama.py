"""Ollama's native API on ``codette serve``, so Ollama's clients (the ``ollama`` Python and JavaScript
libraries, Open WebUI, editors' Ollama settings) can use a Codette model: ``POST /api/chat``,
``POST /api/generate``, ``GET /api/tags``, ``POST /api/show``, ``GET /api/ps`` and ``GET /api/version``.

Shapes follow Ollama's API reference (docs/api.md in the ollama/ollama repository):

* ``stream`` is true unless a request says false, as in Ollama: one JSON object per line
  (``application/x-ndjson``), the last with ``done: true``, ``done_reason``, the token counts and the
  durations in nanoseconds (``load_duration`` is the wait for the model, which is loaded once at start);
* ``options``: ``temperature``, ``top_p``, ``top_k``, ``seed``, ``num_predict`` (-1 and -2: until the
  context is full), ``num_ctx`` (a smaller context for this request) and ``stop``; others are ignored;
* ``format`` (``"json"`` or a JSON schema) is passed to the backend, which constrains decoding (a
  checkpoint through llguidance, a GGUF through llama.cpp's grammars; an upstream server gets the field);
  a schema the grammar cannot express is a 400 naming the keyword;
* tool calls come back as ``message.tool_calls`` with the arguments as an object;
* ``keep_alive`` is accepted and ignored (the model stays loaded while the server runs); an empty
  ``messages`` list or ``prompt`` answers at once with ``done_reason: "load"`` (``"unload"`` when
  ``keep_alive`` is 0), as Ollama does;
* errors are ``{"error": "..."}`` (and, mid-stream, a line of that shape).

Any model name is served by chat and generate, as ``/v1/chat/completions`` does; ``/api/show`` answers
404 for a name that is not this server's (``--model-alias``, with or without ``:latest``), which is how
Ollama's clients ask whether a model exists.
"""

from __future__ import annotations

import json
import threading
from importlib import metadata
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any, Literal, Optional, Union

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import Field, field_validator

from codette.errors import CodetteError
from codette.serve import completions as oc
from codette.serve.engine import Make, ServedModel, Timing, stream_failure
from codette.serve.modelinfo import ModelInfo, rfc3339, tagged
from codette.serve.schemas import (SEED_MAX, SEED_MIN, FunctionCall, Message, ToolCallIn, ToolDef, _Body, _Loose,
                                   check_stops, to_codette_messages, tool_dicts)

NDJSON = "application/x-ndjson"
MAX_OLLAMA_STOP = 16


# -- request bodies -------------------------------------------------------------------------------------
class Options(_Loose):
    """The ``options`` Codette's generation honours; Ollama's others (``repeat_penalty``, ``mirostat``, ...)
    are ignored."""

    temperature: Optional[float] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)
    seed: Optional[int] = Field(None, ge=SEED_MIN, le=SEED_MAX)
    num_predict: Optional[int] = Field(None, ge=-2)
    num_ctx: Optional[int] = Field(None, ge=1)
    stop: Optional[list[str]] = None

    @field_validator("num_predict")
    @classmethod
    def _not_zero(cls, value: int | None) -> int | None:
        if value == 0:
            raise ValueError("must be at least 1, or -1 (until the context is full)")
        return value

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: list[str] | None) -> list[str] | None:
        return check_stops(value, MAX_OLLAMA_STOP)


class OllamaToolCall(_Loose):
    function: FunctionCall


class OllamaMessage(_Loose):
    role: Literal["system", "user", "assistant", "tool"]
    content: Optional[str] = ""
    images: Optional[list[str]] = None
    tool_calls: Optional[list[OllamaToolCall]] = None
    tool_name: Optional[str] = None


Format = Union[Literal["", "json"], dict[str, Any], None]


class _Generation(_Body):
    model: str = ""
    format: Format = None
    options: Optional[Options] = None
    stream: bool = True  # Ollama streams unless told not to
    keep_alive: Union[int, float, str, None] = None

    def response_format(self) -> str | dict | None:
        return self.format or None


class OllamaChatRequest(_Generation):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: Optional[list[ToolDef]] = None


class OllamaGenerateRequest(_Generation):
    prompt: str = ""
    system: Optional[str] = None
    raw: bool = False
    suffix: Optional[str] = None
    template: Optional[str] = None
    images: Optional[list[str]] = None

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("this model cannot fill in the middle (no insert capability): leave suffix out")
        return value

    @field_validator("template")
    @classmethod
    def _no_template(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("the server renders the model's own chat template; to send a prompt you rendered "
                             "yourself, use raw: true")
        return value


class ShowRequest(_Body):
    model: Optional[str] = None
    name: Optional[str] = None  # the field's name in older clients


# -- translation ----------------------------------------------------------------------------------------
def no_images(images: list[str] | None, where: str) -> None:
    if images:
        raise CodetteError(f"{where}: this model reads no images over this API; send text only")


def codette_messages(messages: list[OllamaMessage]) -> list[dict[str, Any]]:
    """Ollama's messages -> the chat template's, checked as OpenAI's are (a tool result answers a call:
    Ollama pairs them by order, as Codette's template does)."""
    wire = []
    for i, m in enumerate(messages):
        no_images(m.images, f"messages.{i}.images")
        calls = [ToolCallIn(function=tc.function) for tc in m.tool_calls] if m.tool_calls else None
        wire.append(Message(role=m.role, content=m.content if m.content is not None else "", tool_calls=calls))
    return to_codette_messages(wire)


def ollama_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style ``tool_calls`` (arguments as JSON text) -> Ollama's (arguments as an object)."""
    out = []
    for c in calls:
        args = c["function"]["arguments"]
        if isinstance(args, str):
            try:
                args = json.loads(args or "{}")
            except json.JSONDecodeError:
                args = {"_raw": args}  # never dropped: a client sees what the model wrote
        out.append({"function": {"name": c["function"]["name"], "arguments": args}})
    return out


def done_reason(openai_reason: str) -> str:
    """Ollama's ``done_reason``: ``length`` or ``stop`` (a reply with tool calls ends with ``stop`` too)."""
    return "length" if openai_reason == "length" else "stop"


def now() -> str:
    return rfc3339(datetime.now(timezone.utc))


def _version() -> str:
    """Codette's own version (this is not an Ollama build; clients show it, none gate on it)."""
    try:
        return metadata.version("codette")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False) + "\n"


# -- routes ---------------------------------------------------------------------------------------------
def ollama_routes(served: ServedModel, info: ModelInfo, default_tokens: int, default_temperature: float) -> APIRouter:
    """Ollama's routes for ``served`` (described by ``info``); replies are limited to ``default_tokens``
    unless a request's ``num_predict`` asks otherwise."""
    from codette.backends.base import SamplingConfig

    router = APIRouter()
    name = tagged(info.name)

    def sampling(opts: Options | None, prompt_tokens: int | None, fmt: str | dict | None,
                 param: str, tools: list[dict] | None = None) -> SamplingConfig:
        opts = opts or Options()
        wanted = opts.num_predict
        if wanted is not None and wanted < 0:  # until the context is full (cut below to what the prompt leaves)
            contexts = [c for c in (served.context, opts.num_ctx) if c]
            wanted = min(contexts) if contexts else default_tokens
        limit = served.reply_limit(prompt_tokens, wanted, default_tokens, opts.num_ctx, param)
        sampled = SamplingConfig(max_new_tokens=limit,
                                 temperature=default_temperature if opts.temperature is None else opts.temperature,
                                 top_p=opts.top_p or 1.0, top_k=opts.top_k or 0, seed=opts.seed, response_format=fmt)
        served.check_constraint(sampled, tools)
        return sampled

    def head(**fields: Any) -> dict[str, Any]:
        return {"model": name, "created_at": now(), **fields}

    def final(timing: Timing, reason: str, text: str, **fields: Any) -> dict[str, Any]:
        """The last object; when a stop sequence ended the generation before the backend's counts came, the
        reply's tokens are counted from its ``text`` (where the backend has a tokenizer)."""
        evals = timing.completion_tokens if timing.completion_tokens is not None else served.count_text(text)
        return head(**fields, done=True, done_reason=reason, **timing.nanoseconds(),
                    prompt_eval_count=timing.prompt_tokens or 0, eval_count=evals or 0)

    def loaded(keep_alive: Any, **fields: Any) -> JSONResponse:
        """The answer to an empty request: Ollama's way to load (or unload) a model; here it is always loaded."""
        reason = "unload" if keep_alive in (0, "0", "0s", "0m") else "load"
        return JSONResponse(head(**fields, done=True, done_reason=reason))

    async def answer(make: Make, prompt_tokens: int | None, stops: list[str] | None, tools_on: bool, raw: bool,
                     stream: bool, shape: Any) -> Any:
        """Run one generation and answer it whole or as NDJSON lines; ``shape(text, calls)`` puts the reply's
        text (and calls) in the route's field (``message`` or ``response``)."""
        timing = Timing(prompt_tokens=prompt_tokens)  # the backend's own count replaces ours when it comes
        if not stream:
            reply = await served.collect(make, stops, timing)
            content, calls = oc.whole_reply(reply, tools_on, raw, strip=not raw)  # raw: the text as generated
            return final(timing, done_reason(reply.finish(calls)), reply.text,
                         **shape(content or "", ollama_calls(calls)))
        served.worker.check_room()

        async def lines() -> AsyncIterator[str]:
            shown = oc.Shown(stops, tools_on, raw)
            try:
                async with served.generate(make, timing) as pieces:
                    async for piece in pieces:
                        text = shown.add(piece)
                        if text:
                            yield _line(head(**shape(text, []), done=False))
                        if shown.stopped:
                            break
                tail, calls = shown.end()
                if tail or calls:
                    yield _line(head(**shape(tail, ollama_calls(calls)), done=False))
                yield _line(final(timing, done_reason(shown.reply.finish(calls)), shown.reply.text, **shape("", [])))
            except Exception as exc:  # noqa: BLE001 - the headers went out: an error line ends the stream
                yield _line({"error": stream_failure(exc)[0]})

        return StreamingResponse(lines(), media_type=NDJSON, headers={"Cache-Control": "no-cache"})

    def message(text: str, calls: list[dict[str, Any]]) -> dict[str, Any]:
        msg: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            msg["tool_calls"] = calls
        return {"message": msg}

    def response(text: str, _calls: list[dict[str, Any]]) -> dict[str, Any]:
        return {"response": text}

    @router.post("/api/chat")
    async def chat(body: OllamaChatRequest) -> Any:
        if not body.messages:
            return loaded(body.keep_alive, message={"role": "assistant", "content": ""})
        messages = codette_messages(body.messages)
        tools = tool_dicts(body.tools) if body.tools else None
        prompt_tokens = served.counter(messages, tools) if served.counter else None
        opts = body.options or Options()
        sampled = sampling(opts, prompt_tokens, body.response_format(), "messages", tools)

        def make(_stop: threading.Event) -> Iterator[Any]:
            return served.backend.stream(messages, tools, sampled)

        return await answer(make, prompt_tokens, opts.stop, tools is not None, False, body.stream, message)

    @router.post("/api/generate")
    async def generate(body: OllamaGenerateRequest) -> Any:
        no_images(body.images, "images")
        if not body.prompt:
            return loaded(body.keep_alive, response="")
        opts = body.options or Options()
        if body.raw:  # the prompt as written: no template, no system prompt
            stream_tokens = served.need("stream_tokens", "raw: true")
            ids = served.need("tokenize", "raw: true")(body.prompt)
            prompt_tokens: int | None = len(ids)
            sampled = sampling(opts, prompt_tokens, body.response_format(), "prompt")

            def make(_stop: threading.Event) -> Iterator[Any]:
                return stream_tokens(ids, sampled)
        else:
            messages = ([{"role": "system", "content": body.system}] if body.system else []) + \
                [{"role": "user", "content": body.prompt}]
            prompt_tokens = served.counter(messages, None) if served.counter else None
            sampled = sampling(opts, prompt_tokens, body.response_format(), "prompt")

            def make(_stop: threading.Event) -> Iterator[Any]:
                return served.backend.stream(messages, None, sampled)

        return await answer(make, prompt_tokens, opts.stop, False, body.raw, body.stream, response)

    @router.get("/api/tags")
    async def tags() -> dict[str, Any]:
        return {"models": [info.tag()]}

    @router.get("/api/ps")
    async def running() -> dict[str, Any]:
        return {"models": [info.running()]}

    @router.post("/api/show")
    async def show(body: ShowRequest) -> Any:
        asked = body.model or body.name
        if not info.accepts(asked):
            return JSONResponse({"error": f"model '{asked}' not found; this server serves '{name}'"},
                                status_code=404)
        return info.show()

    @router.get("/api/version")
    async def version() -> dict[str, str]:
        return {"version": _version()}

    return router
