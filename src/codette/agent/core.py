"""MultimodalCodette: the trained model, its tools and the loop between them, behind one object.

::

    from codette import MultimodalCodette

    codette = MultimodalCodette(model_name="codette")          # the quickstart's codette_model/
    response = await codette.generate_response("What is 17 * 23?")
    print(response.text, response.tool_calls, response.metrics)

The prompt is the persona's system prompt (:data:`codette.persona.DEFAULT_SYSTEM`) and the enabled
tools as the compact schemas the model is trained on (:func:`codette.tooltable.tool_schema`),
rendered by the one chat template inside the backend. Tools run through
:class:`~codette.tools.Toolbox` in ``workspace`` (when none is given, a temporary folder, removed by
:meth:`close`, or when the object is collected or the program exits); execute_python is off unless
``enable_python=True``. A ``confirm`` callable is asked before each call that changes files (the
CLI asks the user; the server and evaluation pass None, which allows all). One turn runs at a time
(a lock), because one model serves them.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import Any

from codette.agent import perspectives as persp
from codette.agent.images import stage_image
from codette.agent.loop import Confirm, Event, LoopConfig, Turn, run_call, run_turn
from codette.agent.metrics import check_question_type
from codette.agent.response import Response
from codette.agent.threads import iterate_in_thread
from codette.errors import CodetteError
from codette.persona import DEFAULT_SYSTEM
from codette.tools import Toolbox, ToolCall
from codette.tooltable import DEFAULT_TOOLS, TOOL_NAMES, tool_schema

log = logging.getLogger(__name__)

PYTHON_TOOL = "execute_python"


# The order in which default tools are kept when they do not all fit the model's context.
TOOL_PRIORITY = ("calculator", "read_file", "list_directory", "write_file", "search_files", "analyze_data",
                 "web_search", "query_knowledge_base", "analyze_image", "http_request", PYTHON_TOOL)
TOOLS_SHARE = 0.5  # at most this share of the context goes to the system prompt and the default tools


def default_tools(enable_python: bool = False) -> list[str]:
    """The tool table's default tools, in its order, and execute_python when asked for."""
    return [t for t in TOOL_NAMES if t in DEFAULT_TOOLS or (enable_python and t == PYTHON_TOOL)]


def check_tools(names: Iterable[str] | None, enable_python: bool) -> None:
    """Tool names the agent can offer (None: the defaults), or the user's one-line error.

    Shared by the agent and ``codette serve``, which checks its ``--tools`` at start-up instead of on
    every request.
    """
    names = list(names or [])
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown:
        raise CodetteError(f"unknown tool {unknown[0]!r}; available: {', '.join(TOOL_NAMES)}")
    if PYTHON_TOOL in names and not enable_python:
        raise CodetteError("execute_python runs model-written code: pass enable_python=True (CLI: --python) "
                           "to offer it")


class MultimodalCodette:
    """The agent. ``model_name`` is resolved by :func:`codette.agent.resolve.resolve_backend` unless
    ``backend`` (any object with ``chat`` and ``stream``) is given.

    ``tools``: tool names to offer (default: all but execute_python; ``[]`` for none).
    ``system``: the system prompt (default the persona's; ``""`` for none).
    ``confirm``: asked ``(tool name, arguments)`` before a call that changes files runs (True runs
    it; False or a reason refuses it, and the model sees the refusal); None allows every call.
    ``constrain``: hold tool calls to the enabled tools' schemas while decoding (lazily: the reply is free
    text until it opens ``<tool_call>``; with no tool enabled it opens none), on backends that can; False
    decodes freely. Calls are validated, and repaired, either way.
    ``response_format``: "json" or a JSON schema the answer must follow (``codette ask --json-schema``).
    """

    def __init__(self, model_name: str = "codette", backend: Any | None = None,
                 tools: Iterable[str] | None = None, workspace: Path | str | None = None,
                 system: str | None = None, *, enable_python: bool = False, max_rounds: int = 5,
                 repair_tries: int = 2, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None, reply_reserve: int = 32,
                 device: str = "cpu", ollama_host: str | None = None,
                 http: dict[str, Any] | None = None, confirm: Confirm | None = None, constrain: bool = True,
                 response_format: str | dict | None = None) -> None:
        from codette.backends.base import SamplingConfig

        try:
            sampling = SamplingConfig(max_new_tokens, temperature, top_k, top_p, seed, response_format=response_format,
                                      tool_choice="auto" if constrain else None)
        except ValueError as exc:  # out-of-range knobs, named by SamplingConfig
            raise CodetteError(f"sampling settings: {exc}") from None
        self.config = LoopConfig(max_rounds, repair_tries, reply_reserve, sampling)
        self.enable_python = enable_python
        names = default_tools(enable_python) if tools is None else list(tools)
        self._check_tools(names)
        self.tools_note: str | None = None  # set when the default tools were cut to fit the context
        if backend is None:
            from codette.agent.resolve import resolve_backend

            backend = resolve_backend(model_name, device=device, ollama_host=ollama_host, http=http)
        self.backend = backend
        self.model_name = model_name
        self.workspace = Path(tempfile.mkdtemp(prefix="codette-workspace-") if workspace is None else workspace)
        # A temporary workspace goes with the object even without close(): collected, or at exit.
        self._remove_workspace = None if workspace is not None else weakref.finalize(
            self, shutil.rmtree, self.workspace, ignore_errors=True)
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.confirm = confirm
        self.system = DEFAULT_SYSTEM if system is None else system
        self._lock = threading.Lock()
        if tools is None:
            names = self._fitting(names)
        self.toolbox = Toolbox(self.workspace, enabled=names)
        self._image_tools = Toolbox(self.workspace, enabled=["analyze_image"])

    # -- tools ----------------------------------------------------------------------------------------
    def _check_tools(self, names: list[str]) -> None:
        check_tools(names, self.enable_python)

    def _fitting(self, names: list[str]) -> list[str]:
        """The default tools that fit in :data:`TOOLS_SHARE` of the model's context, by :data:`TOOL_PRIORITY`.

        A small model's context may not hold every schema (the quickstart's 512 tokens hold about
        three); offering them all would make every prompt overflow. Tools named explicitly are never cut.
        """
        count = getattr(self.backend, "count_tokens", None)
        context = getattr(self.backend, "context_length", None)
        if count is None or not isinstance(context, int):
            return names
        probe = ([{"role": "system", "content": self.system}] if self.system else []) + [
            {"role": "user", "content": "Hi"}]
        budget = int(context * TOOLS_SHARE)
        if count(probe, [tool_schema(n) for n in names]) <= budget:
            return names
        chosen: list[str] = []
        for name in (n for n in TOOL_PRIORITY if n in names):
            if count(probe, [tool_schema(n) for n in chosen + [name]]) <= budget:
                chosen.append(name)
        self.tools_note = (f"the model's {context}-token context holds {len(chosen)} of the {len(names)} default "
                           f"tools within half its length: {', '.join(chosen) or 'none'}; name others with "
                           f"tools=[...] (CLI: --tools, or /tools in the chat)")
        log.warning("%s", self.tools_note)
        return chosen

    @property
    def tool_names(self) -> list[str]:
        return self.toolbox.names()

    def set_tools(self, names: Iterable[str] | None) -> None:
        """Offer other tools from the next turn on (``None``: the defaults, ``[]``: none)."""
        chosen = default_tools(self.enable_python) if names is None else list(names)
        self._check_tools(chosen)
        if names is None:
            chosen = self._fitting(chosen)
        with self._lock:
            self.toolbox.close()
            self.toolbox = Toolbox(self.workspace, enabled=chosen)

    def tool_schemas(self) -> list[dict]:
        """The enabled tools as the model sees them (the tool table's compact schemas)."""
        return [tool_schema(n) for n in self.tool_names]

    # -- one turn -------------------------------------------------------------------------------------
    def _turn(self, prompt: str, images: Iterable[Path | str] | None, perspectives: list[str] | None,
              history: list[dict] | None, question_type: str | None, raw: bool = False) -> Turn:
        if not isinstance(prompt, str) or not prompt.strip():
            raise CodetteError("the prompt is empty: write a message for Codette")
        check_question_type(question_type)
        keys = persp.check(list(perspectives) if perspectives else None)
        history = [dict(m) for m in history or []]
        if history:
            from codette.tokenizer.chat_template import validate_messages

            validate_messages(history, "history")
            if history[0].get("role") == "system":
                raise CodetteError("history: leave the system prompt out (the agent adds its own; set system=...)")
        staged = [stage_image(p, self.workspace) for p in images or []]
        opening: list[dict] = [{"role": "user", "content": persp.request(prompt.strip(), keys)}]
        prelude = []
        for rel in staged:
            call = ToolCall("analyze_image", {"path": rel})
            record = run_call(self._image_tools, call, 0)
            prelude.append(record)
            opening += [{"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
                        {"role": "tool", "content": record.result}]
        system = [{"role": "system", "content": self.system}] if self.system else []
        return Turn(system, history, opening, prelude, self.tool_schemas(), prompt.strip(), keys, question_type,
                    hide_markers=not raw, call_schemas=self.toolbox.schemas())

    def iter_events(self, prompt: str, *, images: Iterable[Path | str] | None = None,
                    perspectives: list[str] | None = None, history: list[dict] | None = None,
                    question_type: str | None = None, stop: threading.Event | None = None,
                    raw: bool = False) -> Iterator[Event]:
        """One turn as events (synchronous): text deltas, tool calls and results, repairs, then ``done``.

        Input mistakes (empty prompt, missing image, unknown perspective) raise CodetteError before
        anything runs; failures during the turn end it with ``Response.error``. The text is for people:
        the model's control markers (``<consciousness>``, ``<perspective> KEY``) are left out and
        reported in ``Response.markers``; ``raw=True`` keeps them. Setting ``stop`` ends the turn at
        its next token (or before its next tool call) with :class:`~codette.agent.loop.Cancelled`.
        """
        with self._lock:
            turn = self._turn(prompt, images, perspectives, history, question_type, raw)
            for record in turn.prelude:
                yield Event("tool_call", {"name": record.name, "arguments": record.arguments, "round": 0})
                yield Event("tool_result", {"name": record.name, "ok": record.ok, "result": record.result,
                                            "seconds": record.seconds, "round": 0})
            yield from run_turn(self.backend, self.toolbox, turn, self.config, stop, self.confirm)

    def respond(self, prompt: str, **kwargs: Any) -> Response:
        """The synchronous :meth:`generate_response`."""
        response = None
        for event in self.iter_events(prompt, **kwargs):  # run to the end: the generator releases the lock
            if event.type == "done":
                response = event.data["response"]
        if response is None:  # pragma: no cover - run_turn always ends with done
            raise CodetteError("the turn ended without a response")
        return response

    async def stream(self, prompt: str, **kwargs: Any) -> AsyncIterator[Event]:
        """:meth:`iter_events` for asyncio: the turn runs in a worker thread, events arrive as they happen.

        Leaving the ``async for`` early stops the generation at its next token.
        """
        events = iterate_in_thread(lambda stop: self.iter_events(prompt, stop=stop, **kwargs))
        async with contextlib.aclosing(events):
            async for event in events:
                yield event

    async def generate_response(self, prompt: str, *, images: Iterable[Path | str] | None = None,
                                perspectives: list[str] | None = None, history: list[dict] | None = None,
                                question_type: str | None = None, raw: bool = False) -> Response:
        """Answer ``prompt`` (running tools as the model asks) and return the :class:`Response`."""
        response = None
        async for event in self.stream(prompt, images=images, perspectives=perspectives, history=history,
                                       question_type=question_type, raw=raw):
            if event.type == "done":
                response = event.data["response"]
        if response is None:  # pragma: no cover - run_turn always ends with done
            raise CodetteError("the turn ended without a response")
        return response

    # -- lifetime -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the tools, free the backend, remove the temporary workspace (if the agent made it)."""
        self.toolbox.close()
        self._image_tools.close()
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()
        if self._remove_workspace is not None:
            self._remove_workspace()  # runs once: a later collection or exit does nothing

    def __enter__(self) -> MultimodalCodette:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> MultimodalCodette:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
