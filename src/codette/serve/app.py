"""The HTTP application: OpenAI's chat-completions API, Codette's agent, and the web chat page; Ollama's
native API (:mod:`codette.serve.ollama`), raw-text completions and the tokenizer
(:mod:`codette.serve.rawtext`) and Prometheus metrics (:mod:`codette.serve.metrics`) beside them.

Routes (all answers JSON unless streamed as server-sent events):

* ``GET /`` — the chat page (static/index.html, no build step);
* ``GET /health`` — ``{"status": "ok", ...}`` with the queue's state;
* ``GET /v1/models`` — the one model served;
* ``POST /v1/chat/completions`` — OpenAI's API: ``messages``, ``tools``, ``tool_choice``
  (``auto``/``none``/``required``/a named function), ``parallel_tool_calls``, ``response_format``
  (``text``/``json_object``/``json_schema``), ``temperature``, ``top_p``, ``max_tokens``, ``stop``, ``seed``,
  ``stream``; the client's tools are rendered by the model's chat template and its ``<tool_call>`` markup
  comes back as structured ``tool_calls``; nothing runs on the server. A local model's decoding is held to
  the response format and to calls of the offered tools (:mod:`codette.backends.constraints`); a schema
  its grammar cannot express is a 400 naming the keyword;
* ``POST /v1/completions``, ``POST /tokenize``, ``POST /detokenize`` — raw text (:mod:`~codette.serve.rawtext`);
* ``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/show``, ``/api/ps``, ``/api/version`` — Ollama's
  API (:mod:`~codette.serve.ollama`);
* ``GET /metrics`` — Prometheus text, only with ``--metrics`` (404 otherwise);
* ``GET /v1/agent/info`` and ``POST /v1/agent`` — one turn of Codette's own agent: its system prompt,
  its tools run here in the server's workspace (execute_python only with ``--python``), the loop's
  events streamed as they happen. The page uses these.

The text returned (``content``, the agent's ``text``) leaves out the model's control markers
(``<consciousness>``, ``<perspective> KEY``), also when streamed; ``raw: true`` in either request keeps them.

Errors use OpenAI's error object (Ollama's ``{"error": ...}`` on ``/api/``). A bad body is a 400 naming
the field; a prompt longer than the context a 400 with both token counts; a full queue a 503 with
``Retry-After``; a request past its deadline a 504 (or an error event once streaming has begun).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from codette.backends.constraints import ConstraintError, UnsupportedSchema
from codette.errors import CodetteError
from codette.serve import completions as oc
from codette.serve.completions import sse
from codette.serve.engine import ContextTooLong, NotSupported, ServedModel, Timing, stream_failure
from codette.serve.guard import OLLAMA_PREFIX, Guard, error_body
from codette.serve.modelinfo import ModelInfo
from codette.serve.ollama import ollama_routes
from codette.serve.rawtext import raw_text_routes
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
    model_alias: str | None = None  # the name clients see and send (/v1/models, /api/tags), instead of model_name
    ctx_size: int | None = None  # a smaller context than the model's (prompt and reply together)
    threads: int | None = None  # CPU threads of the generation (read when the backend loads, by serve())
    metrics: bool = False  # GET /metrics (Prometheus); 404 when off

    @property
    def served_name(self) -> str:
        return self.model_alias or self.model_name


class _Borrowed:
    """The served backend lent to one agent turn: the agent's ``close`` must not close it."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def close(self) -> None:
        pass


def _error(request: Request, status: int, message: str, code: str, param: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    """The error in the shape of the API asked: Ollama's ``{"error": ...}`` on its routes, OpenAI's elsewhere."""
    if request.url.path.startswith(OLLAMA_PREFIX):
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    kind = {429: "rate_limit_error", 503: "server_error", 504: "timeout_error", 500: "server_error",
            501: "server_error"}.get(status, "invalid_request_error")
    return JSONResponse(error_body(message, code, param, kind), status_code=status, headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


def create_app(backend: Any, config: ServeConfig | None = None) -> Any:
    """The ASGI application serving ``backend``: the FastAPI app behind the :class:`Guard` (and, with
    ``metrics``, behind the request counter, so refused requests are counted too)."""
    from codette.agent.core import check_tools

    cfg = config or ServeConfig()
    check_tools(cfg.agent_tools, cfg.enable_python)  # at start-up, not as a failure of every agent request
    worker = ModelWorker(backend, cfg.max_queue, cfg.timeout_s)
    metrics = None
    if cfg.metrics:  # prometheus_client is loaded only when asked for
        from codette.serve.metrics import ServeMetrics

        metrics = ServeMetrics(worker)
    served = ServedModel(backend, worker, cfg.ctx_size, metrics)
    name = cfg.served_name
    info = ModelInfo.of(backend, name, served.context)
    own_workspace = cfg.workspace is None
    workspace = Path(tempfile.mkdtemp(prefix="codette-serve-")) if own_workspace else Path(cfg.workspace)
    workspace.mkdir(parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if own_workspace:  # the temporary workspace goes with the server
            shutil.rmtree(workspace, ignore_errors=True)

    app = FastAPI(title="Codette", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    if own_workspace:  # also when the app never ran its lifespan (built and dropped, or a test client)
        weakref.finalize(app, shutil.rmtree, workspace, True)
    app.state.worker, app.state.config, app.state.workspace = worker, cfg, workspace
    app.state.served, app.state.metrics = served, metrics
    context = served.context

    # -- errors ---------------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": ("body",), "msg": "invalid body", "type": ""}
        if first.get("type") == "json_invalid":
            why = first.get("ctx", {}).get("error", "parse error")
            return _error(request, 400, f"the body is not valid JSON ({why})", "invalid_json")
        if first.get("type") == "lone_surrogate":  # a body-wide check: the message names the field itself
            return _error(request, 400, first["msg"], "invalid_request_error", first["ctx"]["field"])
        field_name = _field(tuple(first.get("loc", ())))
        if first.get("type") == "missing" and field_name == "body":
            return _error(request, 400, "the body is empty: send a JSON object", "invalid_request_error")
        return _error(request, 400, f"{field_name}: {first.get('msg')}", "invalid_request_error", field_name)

    @app.exception_handler(ContextTooLong)
    async def _too_long(request: Request, exc: ContextTooLong) -> JSONResponse:
        return _error(request, 400, str(exc), "context_length_exceeded", exc.param)

    @app.exception_handler(NotSupported)
    async def _unsupported(request: Request, exc: NotSupported) -> JSONResponse:
        return _error(request, 501, str(exc), "not_supported")

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return _error(request, 503, str(exc), "server_busy", headers={"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(DeadlineExceeded)
    async def _late(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return _error(request, 504, str(exc), "timeout")

    @app.exception_handler(ConstraintError)
    async def _unconstrainable(request: Request, exc: ConstraintError) -> JSONResponse:
        code = "unsupported_schema" if isinstance(exc, UnsupportedSchema) else "invalid_request_error"
        return _error(request, 400, str(exc), code, exc.param)

    @app.exception_handler(CodetteError)
    async def _bad(request: Request, exc: CodetteError) -> JSONResponse:
        message = str(exc)
        param = message.split(":", 1)[0] if message.startswith(("messages.", "history.", "prompt:")) else None
        return _error(request, 400, message, "invalid_request_error", param)

    # -- plain routes ---------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    async def page() -> HTMLResponse:
        html = resources.files("codette.serve").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": "default-src 'self'; script-src 'self' "
                                           "'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:",
                                           "X-Frame-Options": "DENY", "Cache-Control": "no-store"})

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "generating": worker.running, "waiting": worker.waiting,
                "max_queue": worker.max_queue}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [info.card()]}

    if metrics is not None:
        @app.get("/metrics")
        async def metrics_text() -> Response:
            text, media_type = metrics.render()
            return Response(text, media_type=media_type)

    # -- OpenAI chat completions ----------------------------------------------------------------------
    def prepared(body: ChatRequest) -> tuple[list[dict], list[dict] | None, Any]:
        from codette.backends.base import SamplingConfig

        messages = to_codette_messages(body.messages)
        tools = tool_dicts(body.tools) if body.uses_tools() else None
        prompt_tokens = served.counter(messages, tools) if served.counter else None
        limit = served.reply_limit(prompt_tokens, body.reply_limit(), cfg.max_tokens)
        temperature = cfg.temperature if body.temperature is None else body.temperature
        sampling = SamplingConfig(max_new_tokens=limit, temperature=temperature, top_p=body.top_p or 1.0,
                                  seed=body.seed,
                                  response_format=body.response_format.constraint() if body.response_format else None,
                                  tool_choice=body.call_choice(), parallel_tool_calls=body.parallel_tool_calls is not False)
        try:
            served.check_constraint(sampling, tools)
        except UnsupportedSchema as exc:
            if body.tool_choice is not None or exc.param != "tools":
                raise
            # Nobody asked for held calls: tools the grammar cannot express are offered unheld, as before.
            log.warning("%s; the calls are not held to the tools", exc)
            sampling = dataclasses.replace(sampling, tool_choice=None)
            served.check_constraint(sampling, tools)
        return messages, tools, sampling

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest) -> Any:
        timing = Timing()  # from the request's arrival: time to first token includes the queue
        messages, tools, sampling = prepared(body)
        cid = oc.new_id("chatcmpl-")
        tools_on = tools is not None

        def make(_stop: threading.Event) -> Iterator[Any]:
            return backend.stream(messages, tools, sampling)

        if body.stream:
            worker.check_room()
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(cid, make, tools_on, body.stop, include_usage, body.raw, timing),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        reply = await served.collect(make, body.stop, timing)
        content, calls = oc.whole_reply(reply, tools_on, body.raw)
        return oc.completion(cid, name, content, calls, reply.finish(calls), reply.usage())

    async def _stream(cid: str, make: Any, tools_on: bool, stops: list[str] | None,
                      include_usage: bool, raw: bool, timing: Timing) -> AsyncIterator[str]:
        shown = oc.Shown(stops, tools_on, raw)
        try:
            async with served.generate(make, timing) as pieces:
                yield sse(oc.chunk(cid, name, {"role": "assistant", "content": ""}))
                async for piece in pieces:
                    text = shown.add(piece)
                    if text:
                        yield sse(oc.chunk(cid, name, {"content": text}))
                    if shown.stopped:
                        break
            text, calls = shown.end()
            if text:
                yield sse(oc.chunk(cid, name, {"content": text}))
            for delta in oc.call_deltas(calls):
                yield sse(oc.chunk(cid, name, delta))
            yield sse(oc.chunk(cid, name, {}, shown.reply.finish(calls)))
            if include_usage:
                yield sse(oc.chunk(cid, name, None, use=shown.reply.usage()))
        except Exception as exc:  # noqa: BLE001 - after the headers went out: an error event ends the stream
            message, code = stream_failure(exc)
            yield sse(error_body(message, code, kind="server_error"))
        yield "data: [DONE]\n\n"

    # -- Ollama's API, raw text ---------------------------------------------------------------------------
    routers = [ollama_routes(served, info, cfg.max_tokens, cfg.temperature),
               raw_text_routes(served, name, cfg.max_tokens, cfg.temperature)]
    for router in routers:
        app.include_router(router)

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
            return {"model": name, "context_length": context, "tools": agent.tool_names,
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
                                    yield sse({"type": "done", "response": event.data["response"].to_dict(),
                                                "tools_note": agent.tools_note})
                                else:
                                    yield sse({"type": event.type, **event.data})
                    finally:
                        agent.close()
            except CodetteError as exc:
                yield sse({"type": "error", "error": str(exc)})
            except Exception as exc:  # noqa: BLE001 - a stream always ends with done or error, never silently
                log.exception("the agent turn failed")
                yield sse({"type": "error", "error": f"the turn failed: {type(exc).__name__}: {str(exc)[:200]}"})

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    guarded = Guard(app, bind_host=cfg.host, allow_hosts=cfg.allow_hosts, allow_origins=cfg.allow_origins,
                    api_key=cfg.api_key, max_body=cfg.max_body)
    if metrics is None:
        return guarded
    metrics.routes.update(getattr(r, "path", "") for routes in [app.routes, *(r.routes for r in routers)]
                          for r in routes)
    return metrics.counting(guarded)

