"""The one chat template: how a conversation becomes text.

Training data, generation, the GGUF's ``tokenizer.chat_template`` and the Ollama Modelfile all derive
from :data:`CHAT_TEMPLATE`. The format is ChatML (``<|im_start|>role\\n...<|im_end|>``), which
llama.cpp, Ollama and Hugging Face users already know, with Hermes-style tool calls
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``) and a ``tool`` role for tool results.

Rendering uses the same Jinja settings as Hugging Face ``apply_chat_template`` (sandboxed,
``trim_blocks``/``lstrip_blocks``, ``tojson`` without ASCII escaping or key sorting), so our text
and ``transformers``' text are identical. A rendering also has limits (time, output size, ``range``
items), so a template read from a file cannot hang a run.
"""

from __future__ import annotations

import contextvars
import json
import time
from functools import lru_cache
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from codette.errors import CodetteError
from codette.persona import CONSCIOUSNESS_MARK, PERSPECTIVE_MARK

BOS = "<bos>"
EOS = "<eos>"
PAD = "<pad>"
UNK = "<unk>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
# Control tokens: structure, never produced inside message text.
CONTROL_TOKENS = [PAD, UNK, BOS, EOS, IM_START, IM_END]
# Content markers: the model writes them inside answers (perspective tags, tool calls).
MARKER_TOKENS = ["<tool>", CONSCIOUSNESS_MARK, PERSPECTIVE_MARK, "<tool_call>", "</tool_call>"]
SPECIAL_TOKENS = CONTROL_TOKENS + MARKER_TOKENS

ROLES = ("system", "user", "assistant", "tool")

# How a tool's parameter type is written in its signature (TypeScript's names, as Ollama's
# toTypeScriptType writes them, so the Modelfile's Go template renders the same text).
TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean", "array": "any[]",
            "object": "Record<string, any>", "null": "null"}

CHAT_TEMPLATE = (
    "{%- macro ts(p) %}"
    "{%- set names = " + json.dumps(TS_TYPES) + " %}"
    "{%- if p.anyOf is defined and p.anyOf %}{%- for a in p.anyOf %}{{- (' | ' if not loop.first else '') + ts(a) }}"
    "{%- endfor %}"
    "{%- elif p.type is not defined or not p.type %}{{- 'any' }}"
    "{%- elif p.type is string %}{{- names.get(p.type, 'any') }}"
    "{%- else %}{%- for t in p.type %}{{- (' | ' if not loop.first else '') + names.get(t, 'any') }}{%- endfor %}"
    "{%- endif %}"
    "{%- endmacro %}"
    "{{- bos_token }}"
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0].role == 'system' %}{{- messages[0].content + '\\n\\n' }}{%- endif %}"
    "{{- '# Tools\\n\\nYou can call these functions:' }}"
    "{%- for tool in tools %}"
    "{%- set f = tool.function if tool.function is defined else tool %}"
    "{{- '\\n- ' + f.name + '(' }}"
    "{%- if f.parameters is defined and f.parameters.properties is defined %}"
    "{%- for name, p in f.parameters.properties | dictsort(true) %}"
    "{{- (', ' if not loop.first else '') + name + ': ' + ts(p) }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- ')' }}"
    "{%- if f.description %}{{- ': ' + f.description }}{%- endif %}"
    "{%- endfor %}"
    "{{- '\\n\\nTo call a function, answer with a JSON object inside <tool_call></tool_call> tags:\\n"
    "<tool_call>\\n{\"name\": <function-name>, \"arguments\": <arguments-json-object>}\\n</tool_call><|im_end|>\\n' }}"
    "{%- elif messages and messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'system' %}"
    "{%- if not loop.first %}{{- raise_exception('a system message may only come first') }}{%- endif %}"
    "{%- elif message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if message.content %}{{- message.content }}{%- endif %}"
    "{%- if message.tool_calls %}"
    "{%- for tc in message.tool_calls %}"
    "{%- set f = tc.function if tc.function is defined else tc %}"
    "{%- if message.content or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + f.name + '\", \"arguments\": ' }}"
    "{%- if f.arguments is string %}{{- f.arguments }}{%- else %}{{- f.arguments | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _raise(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


# Limits of one rendering: a template read from a tokenizer_config.json is untrusted text, and the
# sandbox alone stops it touching the system but not looping for hours (nested range(100000) loops)
# or building gigabytes. Codette's own template uses none of these; a long conversation renders in
# well under a millisecond.
MAX_RENDER_SECONDS = 5.0
MAX_RENDER_CHARS = 32 << 20
MAX_RANGE_ITEMS = 100_000  # all range() items of one rendering together


class TemplateLimit(jinja2.exceptions.TemplateError):
    """A rendering went past one of the limits above."""


class _Budget:
    def __init__(self) -> None:
        self.deadline = time.monotonic() + MAX_RENDER_SECONDS
        self.range_items = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"the chat template ran longer than {MAX_RENDER_SECONDS:g} s")


_budget: contextvars.ContextVar[_Budget] = contextvars.ContextVar("codette_template_budget")


def _current() -> _Budget:
    """The budget of the rendering in progress (outside :func:`render`, a fresh one per call)."""
    return _budget.get(None) or _Budget()


class _BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The Hugging Face sandbox plus a time limit, a range budget and bounded ``*``/``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # lipsum(n=10**9) would run inside one call

    @staticmethod
    def _range(*args: int) -> range:
        budget = _current()
        items = range(*args)
        budget.range_items += len(items)
        if budget.range_items > MAX_RANGE_ITEMS:
            raise TemplateLimit(f"the chat template asks for more than {MAX_RANGE_ITEMS:,} range() items")
        return items

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        _current().tick()
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _current().tick()
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_RENDER_CHARS:
                    raise TemplateLimit(f"the chat template builds a sequence longer than {MAX_RENDER_CHARS:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and \
                abs(left) > 1 and right * max(left.bit_length(), 1) > 1 << 16:
            raise TemplateLimit("the chat template computes a number too large")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    env = _BoundedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    return env.from_string(template)


def validate_messages(messages: list[dict], where: str = "conversation") -> None:
    """Check roles and content types; errors name the message index."""
    if not isinstance(messages, list) or not messages:
        raise CodetteError(f"{where}: 'messages' must be a non-empty list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise CodetteError(f"{where}: message {i} must be an object, got {type(m).__name__}")
        role = m.get("role")
        if role not in ROLES:
            raise CodetteError(f"{where}: message {i} has unknown role {role!r}; expected one of {', '.join(ROLES)}")
        content = m.get("content")
        if content is not None and not isinstance(content, str):
            raise CodetteError(f"{where}: message {i} ({role}) content must be a string")
        if content is None and not (role == "assistant" and m.get("tool_calls")):
            raise CodetteError(f"{where}: message {i} ({role}) has no content")


def render(
    messages: list[dict],
    tools: list[dict] | None = None,
    add_generation_prompt: bool = False,
    bos_token: str = BOS,
    template: str = CHAT_TEMPLATE,
) -> str:
    """Render ``messages`` (OpenAI style) to the model's text, exactly as Hugging Face would."""
    budget = _Budget()
    token = _budget.set(budget)
    try:
        pieces, size = [], 0
        for i, piece in enumerate(_compiled(template).generate(
            messages=messages, tools=tools, add_generation_prompt=add_generation_prompt,
            bos_token=bos_token, eos_token=EOS,
        )):
            size += len(piece)
            if size > MAX_RENDER_CHARS:
                raise TemplateLimit(f"the chat template writes more than {MAX_RENDER_CHARS:,} characters")
            if not i & 63:
                budget.tick()
            pieces.append(piece)
        return "".join(pieces)
    except jinja2.exceptions.TemplateError as exc:
        raise CodetteError(f"cannot render conversation: {exc}") from None
    except RecursionError:
        raise CodetteError("cannot render conversation: the chat template recurses without end") from None
    except (MemoryError, OverflowError) as exc:
        raise CodetteError(f"cannot render conversation: the chat template needs too much memory "
                           f"({type(exc).__name__})") from None
    finally:
        _budget.reset(token)


def assistant_spans(messages: list[dict], tools: list[dict] | None = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered text and the character spans the model should learn to produce.

    A span covers an assistant message's content, its tool calls and its closing ``<|im_end|>``,
    but not the ``<|im_start|>assistant`` header, which the runtime writes.
    """
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start = len(render(messages[:i], tools, add_generation_prompt=True))
        end = len(render(messages[: i + 1], tools))
        spans.append((start, end))
    full = render(messages, tools)
    for start, end in spans:
        if end > len(full) or start > end:
            raise CodetteError("chat template is not prefix-stable; cannot locate assistant turns")
    return full, spans
