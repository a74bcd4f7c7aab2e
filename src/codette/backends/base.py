"""The one small interface every generation backend implements (evaluation and the agent use it).

``chat`` returns the whole reply; ``stream`` yields it as :class:`Chunk` pieces, the last one with
the token counts when the backend knows them. An HTTP server may also return structured tool calls
(``Chunk.tool_calls``) instead of the ``<tool_call>`` markup in the text; the agent accepts both.

The decoding knobs (:class:`SamplingConfig`) live here, beside the interface that takes them, and
not with the model: an agent that only talks to an HTTP server never loads torch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol



class SamplingError(ValueError):
    """Sampling knobs out of range; ``problems`` lists (field, what it must be, the value given)."""

    def __init__(self, problems: list[tuple[str, str, object]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{name} must be {rule}, got {value!r}" for name, rule, value in problems))


def _tool_choice_ok(value: object) -> bool:
    if value is None or value in ("auto", "none", "required"):
        return True
    function = value.get("function") if isinstance(value, dict) and value.get("type") == "function" else None
    return isinstance(function, dict) and isinstance(function.get("name"), str) and bool(function["name"])


@dataclass
class SamplingConfig:
    """Decoding knobs; ``temperature=0`` means greedy. Out-of-range values raise :class:`SamplingError`
    here, for every caller (CLI, evaluation, backends), instead of a torch error or a silent change."""

    max_new_tokens: int = 128
    temperature: float = 0.7
    top_k: int = 0  # 0 disables
    top_p: float = 1.0  # 1.0 disables
    seed: int | None = None
    # Constrain the reply to JSON: "json" (any JSON object) or a JSON schema (a dict). The PyTorch and GGUF
    # backends hold decoding to it (codette.backends.constraints); Ollama and OpenAI-style servers get it.
    response_format: str | dict | None = None
    # Hold tool calls to the offered tools: None leaves them free; "auto" lets the reply be text until it
    # opens <tool_call>, then holds the call (a tool's name, arguments valid under its schema); "required"
    # makes the reply calls only; {"type": "function", "function": {"name": N}} one call of N; "none" asks
    # a server for no calls. HTTP backends send it as OpenAI's tool_choice.
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool = True  # False: at most one call per reply
    # The tools whose schemas constrained calls must match, when they are not the tools shown in the prompt
    # (the agent shows a small model compact schemas and validates calls against the full ones).
    call_schemas: list[dict] | None = None

    def __post_init__(self) -> None:
        checks = (
            ("max_new_tokens", "an integer >= 0", lambda v: isinstance(v, int) and v >= 0),
            ("temperature", "a finite number >= 0 (0: greedy)", lambda v: math.isfinite(v) and v >= 0),
            ("top_k", "an integer >= 0 (0: off)", lambda v: isinstance(v, int) and v >= 0),
            ("top_p", "a number in (0, 1] (1: off)", lambda v: 0 < v <= 1),
            # outside 64 bits torch.Generator.manual_seed fails mid-generation (a 500 from `codette serve`)
            ("seed", "None or an integer from -2**63 to 2**64-1",
             lambda v: v is None or (isinstance(v, int) and -(1 << 63) <= v < (1 << 64))),
            ("response_format", "None, 'json' or a JSON schema (a dict)",
             lambda v: v is None or v == "json" or isinstance(v, dict)),
            ("tool_choice", "None, 'auto', 'none', 'required' or {'type': 'function', 'function': {'name': ...}}",
             _tool_choice_ok),
            ("parallel_tool_calls", "True or False", lambda v: True),
            ("call_schemas", "None or a list of tools (dicts)",
             lambda v: v is None or (isinstance(v, list) and all(isinstance(t, dict) for t in v))),
        )
        problems = []
        for name, rule, ok in checks:
            value = getattr(self, name)
            try:
                # a bool is an int to Python: only the one switch may be one
                good = isinstance(value, bool) == (name == "parallel_tool_calls") and bool(ok(value))
            except TypeError:
                good = False
            if not good:
                problems.append((name, rule, value))
        if problems:
            raise SamplingError(problems)


@dataclass
class Chunk:
    """One piece of a streamed reply: new text, structured calls, and (on the last chunk) token counts."""

    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {"name": str, "arguments": dict | str}
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


@dataclass
class Reply:
    """A whole streamed reply, put back together by :func:`collect`."""

    text: str
    tool_calls: list[dict[str, Any]]
    prompt_tokens: int | None
    completion_tokens: int | None
    finish_reason: str | None


def collect(chunks: Iterable[Chunk]) -> Reply:
    """Join a stream's chunks (text concatenated, calls in order, the last token counts kept)."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    prompt = completion = reason = None
    for c in chunks:
        text.append(c.text)
        calls.extend(c.tool_calls)
        prompt = c.prompt_tokens if c.prompt_tokens is not None else prompt
        completion = c.completion_tokens if c.completion_tokens is not None else completion
        reason = c.finish_reason or reason
    return Reply("".join(text), calls, prompt, completion, reason)


def arguments_text(arguments: Any) -> str:
    """A call's arguments as JSON text (a string is taken as already being JSON text)."""
    return arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)


def reply_text(reply: Reply) -> str:
    """The reply as the model's own text: structured calls written back as ``<tool_call>`` markup.

    Arguments that are not a JSON object are written as they came, so the tool-call parser reports
    them (and the agent can ask for a repair) instead of this function guessing.
    """
    # imported here: codette.tools loads every tool (PIL, jsonschema, httpx), which SamplingConfig's users
    # (every backend, the agent, serve) need not pay for at import
    from codette.tools.calls import format_tool_call, format_tool_call_text

    parts = [reply.text.strip()] if reply.text.strip() else []
    for tc in reply.tool_calls:
        args = tc["arguments"]
        try:
            parsed = json.loads(args) if isinstance(args, str) else args
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            parts.append(format_tool_call(tc["name"], parsed))
        else:
            parts.append(format_tool_call_text(tc["name"], arguments_text(args)))
    return "\n".join(parts)


class ChatBackend(Protocol):
    name: str

    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             sampling: SamplingConfig | None = None) -> str:
        """The assistant's next message (raw text, tool-call markup included) for ``messages``."""
        ...

    def stream(self, messages: list[dict], tools: list[dict] | None = None,
               sampling: SamplingConfig | None = None) -> Iterator[Chunk]:
        """The same reply as :meth:`chat`, piece by piece as it is generated."""
        ...
