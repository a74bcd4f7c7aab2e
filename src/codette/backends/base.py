"""The one small interface every generation backend implements (evaluation and the agent use it).

``chat`` returns the whole reply; ``stream`` yields it as :class:`Chunk` pieces, the last one with
the token counts when the backend knows them. An HTTP server may also return structured tool calls
(``Chunk.tool_calls``) instead of the ``<tool_call>`` markup in the text; the agent accepts both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from codette.model.generate import SamplingConfig


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
