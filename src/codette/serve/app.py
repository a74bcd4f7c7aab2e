"""The HTTP application: OpenAI's chat-completions API, Codette's agent, and the web chat page.

Routes (all answers JSON unless streamed as server-sent events):

* ``GET /`` — the chat page (static/index.html, no build step);
* ``GET /health`` — ``{"status": "ok", ...}`` with the queue's state;
* ``GET /v1/models`` — the one model served;
* ``POST /v1/chat/completions`` — OpenAI's API: ``messages``, ``tools``, ``tool_choice``
  (``auto``/``none``), ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``, ``stream``;
  the client's tools are rendered by the model's chat template and its ``<tool_call>`` markup comes
  back as structured ``tool_calls``; nothing runs on the server;
* ``GET /v1/agent/info`` and ``POST /v1/agent`` — one turn of Codette's own agent: its system prompt,
  its tools run here in the server's workspace (execute_python only with ``--python``), the loop's
  events streamed as they happen. The page uses these.

The text returned (``content``, the agent's ``text``) leaves out the model's control markers
(``<consciousness>``, ``<perspective> KEY``), also when streamed; ``raw: true`` in either request keeps them.

Errors use OpenAI's error object. A bad body is a 400 naming the field; a prompt longer than the
context a 400 with both token counts; a full queue a 503 with ``Retry-After``; a request past its
deadline a 504 (or an error event once streaming has begun).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from codette.errors import CodetteError
from codette.serve import completions as oc
from codette.serve.guard import Guard, error_body
from codette.serve.schemas import AgentRequest, ChatRequest, to_codette_messages, tool_dicts
from codette.serve.worker import Busy, DeadlineExceeded, ModelWorker

log = logging.getLogger(__name__)

RETRY_AFTER_S = 2


@dataclass
class ServeConfig:
    """What ``codette serve``'s flags set."""

    model_name: str = "codette"
    host: str = "127.0.0.1"
    workspace: Path | None = None  # the agent's tools work here (a temporary folder when None)
    enable_python: bool = False
    agent_tools: list[str] | None = None  # the agent's tools when switched on (None: its defaults)
    api_key: str | None = None
    allow_hosts: list[str] = field(default_factory=list)
    allow_origins: list[str] = field(default_factory=list)
    max_queue: int = 8
    timeout_s: float = 300.0
    max_body: int = 1 << 20
    max_tokens: int = 512  # the reply limit when a request sets none (cut to what the context leaves)
    temperature: float = 0.7  # when a request sets none
    agent_rounds: int = 5


class ContextTooLong(CodetteError):
    pass


class _Borrowed:
    """The served backend lent to one agent turn: the agent's ``close`` must not close it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        pass


def _sse(obj: Any) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


def _error(status: int, message: str, code: str, param: str | None = None, headers: dict | None = None) -> JSONResponse:
    kind = {429: "rate_limit_error", 503: "server_error", 504: "timeout_error", 500: "server_error"}.get(
        status, "invalid_request_error")
    return JSONResponse(error_body(message, code, param, kind), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(backend: Any, config: ServeConfig | None = None) -> Guard:
    """The ASGI application serving ``backend`` (the FastAPI app behind the :class:`Guard`)."""
    from codette.agent.core import check_tools

    cfg = config or ServeConfig()
    check_tools(cfg.agent_tools, cfg.enable_python)  # at start-up, not as a failure of every agent request
    worker = ModelWorker(backend, cfg.max_queue, cfg.timeout_s)
    own_workspace = cfg.workspace is None
    workspace = Path(tempfile.mkdtemp(prefix="codette-serve-")) if own_workspace else Path(cfg.workspace)
    workspace.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_workspace:  # the temporary workspace goes with the server
            shutil.rmtree(workspace, ignore_errors=True)

    app = FastAPI(title="Codette", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.worker, app.state.config, app.state.workspace = worker, cfg, workspace
    context = getattr(backend, "context_length", None)
    counter = getattr(backend, "count_tokens", None)

    # -- errors ---------------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid body", "type": ""}
        if first.get("type") == "json_invalid":
            return _error(400, f"the body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})",
                          "invalid_json")
        if first.get("type") == "lone_surrogate":  # a body-wide check: the message names the field itself
            return _error(400, first["msg"], "invalid_request_error", first["ctx"]["field"])
        name = _field(tuple(first.get("loc", ())))
        if first.get("type") == "missing" and name == "body":
            return _error(400, "the body is empty: send a JSON object", "invalid_request_error")
        return _error(400, f"{name}: {first.get('msg')}", "invalid_request_error", name)

    @app.exception_handler(ContextTooLong)
    async def _too_long(_: Request, exc: ContextTooLong) -> JSONResponse:
        return _error(400, str(exc), "context_length_exceeded", "messages")

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(503, str(exc), "server_busy", headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(DeadlineExceeded)
    async def _late(_: Request, exc: DeadlineExceeded) -> JSONResponse:
        return _error(504, str(exc), "timeout")

    @app.exception_handler(CodetteError)
    async def _bad(_: Request, exc: CodetteError) -> JSONResponse:
        message = str(exc)
        param = message.split(":", 1)[0] if message.startswith(("messages.", "history.")) else None
        return _error(400, message, "invalid_request_error", param)

    # -- plain routes ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("codette.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
                                           "X-Frame-Options": "DENY", "Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": cfg.model_name, "generating": worker.running, "waiting": worker.waiting,
                "max_queue": worker.max_queue}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {"id": cfg.model_name, "object": "model", "created": int(time.time()), "owned_by": "codette"}
        if isinstance(context, int):
            card["context_length"] = context
        return {"object": "list", "data": [card]}

    # -- OpenAI chat completions ----------------------------------------------------------------------
    def prepared(body: ChatRequest) -> tuple[list[dict], list[dict] | None, Any]:
        from codette.backends.base import SamplingConfig

        messages = to_codette_messages(body.messages)
        tools = tool_dicts(body.tools) if body.uses_tools() else None
        prompt_tokens = counter(messages, tools) if callable(counter) else None
        limit = body.reply_limit() or cfg.max_tokens
        if prompt_tokens is not None and isinstance(context, int):
            if prompt_tokens >= context:
                raise ContextTooLong(f"the prompt is {prompt_tokens} tokens and this model's context is {context} "
                                     f"tokens; send fewer or shorter messages or tools")
            limit = min(limit, context - prompt_tokens)
        temperature = cfg.temperature if body.temperature is None else body.temperature
        sampling = SamplingConfig(max_new_tokens=limit, temperature=temperature, top_p=body.top_p or 1.0,
                                  seed=body.seed)
        return messages, tools, sampling

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        messages, tools, sampling = prepared(body)
        cid = oc.new_id("chatcmpl-")
        tools_on = tools is not None

        def make(_stop: threading.Event) -> Iterator[Any]:
            return backend.stream(messages, tools, sampling)

        if body.stream:
            worker.check_room()
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(cid, make, tools_on, body.stop, include_usage, body.raw),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        deadline = worker.deadline()
        reply = oc.Collected(body.stop)
        async with worker.slot(deadline), contextlib.aclosing(worker.iterate(make, deadline)) as pieces:
            async for piece in pieces:  # a break (a stop sequence) closes the generation inside the slot
                reply.add(piece)
                if reply.stopped:
                    break
        reply.end()
        content, calls = reply.calls(tools_on, reply.text.strip())
        if content and not body.raw:  # the control markers are the model's, not the reader's
            from codette.agent.markup import strip_markers

            content = strip_markers(content)[0].strip()
        return oc.completion(cid, cfg.model_name, content, calls, reply.finish(calls), reply.usage())

    async def _stream(cid: str, make: Any, tools_on: bool, stops: list[str] | None,
                      include_usage: bool, raw: bool) -> AsyncIterator[str]:
        from codette.agent.markup import MarkerFilter, MarkupFilter

        deadline = worker.deadline()
        reply, hide = oc.Collected(stops), (MarkupFilter() if tools_on else None)
        marks = None if raw else MarkerFilter()  # a marker split across pieces is held back until whole
        try:
            async with worker.slot(deadline), contextlib.aclosing(worker.iterate(make, deadline)) as pieces:
                yield _sse(oc.chunk(cid, cfg.model_name, {"role": "assistant", "content": ""}))
                async for piece in pieces:
                    text = reply.add(piece)
                    shown = hide.feed(text) if hide else text
                    shown = marks.feed(shown) if marks else shown
                    if shown:
                        yield _sse(oc.chunk(cid, cfg.model_name, {"content": shown}))
                    if reply.stopped:
                        break
            tail = reply.end()
            shown = (hide.feed(tail) + hide.flush()) if hide else tail
            shown = (marks.feed(shown) + marks.flush()) if marks else shown
            content, calls = reply.calls(tools_on)
            if tools_on and not calls:
                shown += oc.hidden_blocks(reply.text)  # markup that did not parse: show it as written
            if shown:
                yield _sse(oc.chunk(cid, cfg.model_name, {"content": shown}))
            for delta in oc.call_deltas(calls):
                yield _sse(oc.chunk(cid, cfg.model_name, delta))
            yield _sse(oc.chunk(cid, cfg.model_name, {}, reply.finish(calls)))
            if include_usage:
                yield _sse(oc.chunk(cid, cfg.model_name, None, use=reply.usage()))
        except Exception as exc:  # noqa: BLE001 - after the headers went out: an error event ends the stream
            if not isinstance(exc, (CodetteError, ValueError)):
                log.exception("the generation failed")
            code = "server_busy" if isinstance(exc, Busy) else "timeout" if isinstance(exc, DeadlineExceeded) \
                else "generation_failed"
            yield _sse(error_body(str(exc), code, kind="server_error"))
        yield "data: [DONE]\n\n"

    # -- Codette's agent ------------------------------------------------------------------------------
    def make_agent(tools_on: bool, max_tokens: int | None) -> Any:
        from codette.agent import MultimodalCodette

        return MultimodalCodette(backend=_Borrowed(backend), workspace=workspace,
                                 tools=(cfg.agent_tools if tools_on else []),
                                 enable_python=cfg.enable_python, max_new_tokens=max_tokens or 256,
                                 max_rounds=cfg.agent_rounds)

    @app.get("/v1/agent/info")
    async def agent_info() -> dict[str, Any]:
        from codette.persona import PERSPECTIVES

        agent = make_agent(True, None)
        try:
            return {"model": cfg.model_name, "context_length": context, "tools": agent.tool_names,
                    "tools_note": agent.tools_note, "python": cfg.enable_python, "perspectives": PERSPECTIVES}
        finally:
            agent.close()

    @app.post("/v1/agent")
    async def agent_turn(body: AgentRequest) -> StreamingResponse:
        from codette.agent import perspectives as persp

        history = to_codette_messages(body.history, "history") if body.history else []
        keys = persp.check(body.perspectives)
        if not body.prompt.strip():
            raise CodetteError("prompt: write a message for Codette")
        worker.check_room()

        async def events() -> AsyncIterator[str]:
            deadline = worker.deadline()
            try:
                async with worker.slot(deadline):
                    agent = make_agent(body.tools, body.max_tokens)
                    try:
                        def make(stop: threading.Event) -> Iterator[Any]:
                            return agent.iter_events(body.prompt, perspectives=keys or None, history=history,
                                                     stop=stop, raw=body.raw)

                        async with contextlib.aclosing(worker.iterate(make, deadline)) as turn_events:
                            async for event in turn_events:
                                if event.type == "done":
                                    yield _sse({"type": "done", "response": event.data["response"].to_dict(),
                                                "tools_note": agent.tools_note})
                                else:
                                    yield _sse({"type": event.type, **event.data})
                    finally:
                        agent.close()
            except CodetteError as exc:
                yield _sse({"type": "error", "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - a stream always ends with done or error, never silently
                log.exception("the agent turn failed")
                yield _sse({"type": "error", "error": f"the turn failed: {type(exc).__name__}: {str(exc)[:200]}"})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return Guard(app, bind_host=cfg.host, allow_hosts=cfg.allow_hosts, allow_origins=cfg.allow_origins,
                 api_key=cfg.api_key, max_body=cfg.max_body)

