"""Request bodies of the HTTP API, validated with pydantic (OpenAI's field names and rules).

Unknown fields are ignored, as OpenAI's API ignores them; wrong types and values are refused with the
field's path (``messages.2.role``), which the app turns into a 400. :func:`to_codette_messages`
then checks what pydantic cannot: the order of the conversation (a ``tool`` message answers a call).
"""

from __future__ import annotations

import json
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from codette.errors import CodetteError

MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 64


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


class FunctionCall(_Loose):
    name: str = Field(min_length=1, max_length=128)
    arguments: Union[str, dict[str, Any]] = "{}"


class ToolCallIn(_Loose):
    id: Optional[str] = None
    type: Literal["function"] = "function"
    function: FunctionCall


class TextPart(_Loose):
    type: Literal["text"]
    text: str


class Message(_Loose):
    # "developer" is OpenAI's newer name for the system role.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[TextPart], None] = None
    tool_calls: Optional[list[ToolCallIn]] = None
    tool_call_id: Optional[str] = None
    name: Optional[str] = None

    def text(self) -> str | None:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content


class FunctionDef(_Loose):
    name: str = Field(min_length=1, max_length=128)
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None


class ToolDef(_Loose):
    type: Literal["function"]
    function: FunctionDef


class StreamOptions(_Loose):
    include_usage: bool = False


class ChatRequest(_Loose):
    """``POST /v1/chat/completions``."""

    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    tools: Optional[list[ToolDef]] = None
    tool_choice: Optional[Literal["auto", "none"]] = None
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = None
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=1)

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        stops = [value] if isinstance(value, str) else value
        if stops is None:
            return None
        if len(stops) > MAX_STOP:
            raise ValueError(f"at most {MAX_STOP} stop sequences")
        if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters")
        return stops

    def reply_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"


class AgentRequest(_Loose):
    """``POST /v1/agent``: one turn of Codette's own agent, tools run on the server."""

    prompt: str = Field(min_length=1, max_length=20_000)
    history: list[Message] = Field(default_factory=list, max_length=200)
    perspectives: list[str] = Field(default_factory=list, max_length=11)
    tools: bool = True
    max_tokens: Optional[int] = Field(None, ge=1)


def to_codette_messages(messages: list[Message], where: str = "messages") -> list[dict[str, Any]]:
    """OpenAI wire messages -> the chat template's messages; the conversation's order is checked.

    A ``tool`` message must answer a call of an earlier assistant message (by ``tool_call_id`` when
    the calls had ids), a system message may only come first, and only an assistant message with
    calls may have no content.
    """
    out: list[dict[str, Any]] = []
    open_calls: list[str | None] = []  # calls of the last assistant message not yet answered
    for i, m in enumerate(messages):
        role = "system" if m.role == "developer" else m.role
        content = m.text()
        if role == "system" and i > 0:
            raise CodetteError(f"{where}.{i}: a system message may only come first")
        if role == "tool":
            if not open_calls:
                raise CodetteError(f"{where}.{i}: a tool message must follow an assistant message with "
                                   f"tool_calls that it answers")
            if m.tool_call_id is not None and m.tool_call_id in open_calls:
                open_calls.remove(m.tool_call_id)
            elif m.tool_call_id is not None and any(c is not None for c in open_calls):
                raise CodetteError(f"{where}.{i}: tool_call_id {m.tool_call_id!r} answers no call of the "
                                   f"assistant message before it")
            else:
                open_calls.pop(0)
        else:
            open_calls = []
        msg: dict[str, Any] = {"role": role, "content": content}
        if m.tool_calls:
            if role != "assistant":
                raise CodetteError(f"{where}.{i}: only assistant messages carry tool_calls")
            msg["tool_calls"] = [{"type": "function", "function": {"name": tc.function.name,
                                                                   "arguments": _arguments(tc, f"{where}.{i}")}}
                                 for tc in m.tool_calls]
            open_calls = [tc.id for tc in m.tool_calls]
        if content is None and not (role == "assistant" and m.tool_calls):
            raise CodetteError(f"{where}.{i}.content: a {role} message needs content")
        out.append(msg)
    return out


def _arguments(tc: ToolCallIn, where: str) -> dict[str, Any]:
    args = tc.function.arguments
    if isinstance(args, dict):
        return args
    try:
        value = json.loads(args or "{}")
    except json.JSONDecodeError:
        raise CodetteError(f"{where}.tool_calls: the arguments of {tc.function.name!r} are not JSON") from None
    if not isinstance(value, dict):
        raise CodetteError(f"{where}.tool_calls: the arguments of {tc.function.name!r} must be a JSON object")
    return value


def tool_dicts(tools: list[ToolDef] | None) -> list[dict[str, Any]] | None:
    """The request's tools as the chat template renders them (what the client sent, unknown keys dropped)."""
    if not tools:
        return None
    return [t.model_dump(exclude_none=True) for t in tools]
