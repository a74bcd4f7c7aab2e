"""Request bodies of the HTTP API, validated with pydantic (OpenAI's field names and rules).

Unknown fields are ignored, as OpenAI's API ignores them; wrong types and values are refused with the
field's path (``messages.2.role``), which the app turns into a 400. :func:`to_codette_messages`
then checks what pydantic cannot: the order of the conversation (a ``tool`` message answers a call).
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from codette.errors import CodetteError

MAX_STOP = 4  # as OpenAI
MAX_STOP_CHARS = 64
SEED_MIN, SEED_MAX = -(1 << 63), (1 << 64) - 1  # what a 64-bit generator seed takes (torch's range)
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")


def check_stops(value: str | list[str] | None, most: int = MAX_STOP) -> list[str] | None:
    """Stop sequences as a list: at most ``most``, each 1 to MAX_STOP_CHARS characters."""
    stops = [value] if isinstance(value, str) else value
    if stops is None:
        return None
    if len(stops) > most:
        raise ValueError(f"at most {most} stop sequences")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"each stop sequence must be 1 to {MAX_STOP_CHARS} characters")
    return stops


def _lone_surrogate(body: Any) -> tuple[str, str, int] | None:
    """``(field, surrogate, index)`` of the first string (value or key) of a decoded JSON body holding a
    lone UTF-16 surrogate, or None; index -1 for a key. JSON's ``"\\ud800"`` decodes to one; such text
    cannot be encoded as UTF-8, so the tokenizer (or the reply) would fail on it mid-request.

    Iterative and linear in the body: a node's path is a (key, parent) link, spelled out only for the hit.
    """
    def spelled(link: tuple | None) -> str:
        parts: list[str] = []
        while link is not None:
            parts.append(str(link[0]))
            link = link[1]
        return ".".join(reversed(parts)) or "body"

    stack: list[tuple[tuple | None, Any]] = [(None, body)]
    while stack:
        link, value = stack.pop()
        if isinstance(value, str):
            if m := _SURROGATE.search(value):
                return spelled(link), m.group(), m.start()
        elif isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and (m := _SURROGATE.search(key)):
                    return spelled(link), m.group(), -1
            stack.extend(((key, link), item) for key, item in reversed(list(value.items())))
        elif isinstance(value, list):
            stack.extend(((i, link), item) for i, item in reversed(list(enumerate(value))))
    return None


class _Body(_Loose):
    """A request body: any text in it must be valid Unicode (checked before the fields are)."""

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        found = _lone_surrogate(data)
        if found is not None:
            field, char, index = found
            at = "in a key" if index < 0 else f"at character {index}"
            raise PydanticCustomError(
                "lone_surrogate", "{field}: not valid Unicode: a lone surrogate \\u{code} {at}; send UTF-8 text",
                {"field": field, "code": f"{ord(char):04x}", "at": at})
        return data


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


class JSONSchemaFormat(_Loose):
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    name: Optional[str] = None
    strict: Optional[bool] = None  # accepted: decoding is held to the schema either way (where the backend can)


class NamedFunction(_Loose):
    name: str = Field(min_length=1, max_length=128)


class NamedToolChoice(_Loose):
    """``{"type": "function", "function": {"name": ...}}``: one call of that tool."""

    type: Literal["function"]
    function: NamedFunction


class ResponseFormat(_Loose):
    """OpenAI's ``response_format``: ``text``, ``json_object`` or ``json_schema`` (its ``schema``)."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None

    def constraint(self) -> str | dict[str, Any] | None:
        """What the backend's decoding is asked for: None, "json" or the schema."""
        if self.type == "json_object":
            return "json"
        if self.type == "json_schema":
            return (self.json_schema.schema_ if self.json_schema else None) or "json"
        return None


class ChatRequest(_Body):
    """``POST /v1/chat/completions``."""

    model: Optional[str] = None
    messages: list[Message] = Field(min_length=1)
    tools: Optional[list[ToolDef]] = None
    tool_choice: Union[Literal["auto", "none", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    n: int = Field(1, ge=1, le=1)
    response_format: Optional[ResponseFormat] = None  # constrains decoding where the backend can (see SERVING.md)
    raw: bool = False  # Codette's own: keep the control markers (<consciousness>, <perspective> KEY) in content

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        return check_stops(value)

    def reply_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def uses_tools(self) -> bool:
        return bool(self.tools) and self.tool_choice != "none"

    def call_choice(self) -> str | dict[str, Any] | None:
        """``tool_choice`` as the sampling settings take it: "auto" (the default) holds calls lazily to the
        offered tools, "none" is None (no tools are sent, nothing is parsed)."""
        if self.tool_choice is None:
            return "auto"
        if isinstance(self.tool_choice, NamedToolChoice):
            return self.tool_choice.model_dump()
        return None if self.tool_choice == "none" else self.tool_choice


class CompletionRequest(_Body):
    """``POST /v1/completions``: OpenAI's legacy text completion, the prompt continued as written."""

    model: Optional[str] = None
    prompt: Union[str, list[str], list[int]]  # one text, a list of one, or token ids (as llama-server takes)
    suffix: Optional[str] = None
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0, le=2)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0)  # not OpenAI's; llama-server and vLLM take it
    stop: Union[str, list[str], None] = None
    seed: Optional[int] = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: Optional[StreamOptions] = None
    echo: bool = False
    logprobs: Optional[int] = Field(None, ge=0, le=5)  # accepted; no backend here reports them, so null
    n: int = Field(1, ge=1, le=1)

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: str | list[str] | None) -> list[str] | None:
        return check_stops(value)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list) -> str | list[int]:
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            if len(value) != 1:
                raise ValueError("send one prompt per request (a string, or a list of one)")
            return value[0]
        if isinstance(value, list) and not value:
            raise ValueError("the prompt is empty")
        return value

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, value: str | None) -> str | None:
        if value:
            raise ValueError("this model cannot fill in the middle: leave suffix out")
        return value


class TokenizeRequest(_Body):
    """``POST /tokenize`` (llama-server's): text -> token ids, no chat template."""

    content: str = Field(max_length=1 << 20)
    with_pieces: bool = False
    add_special: bool = False  # accepted: Codette's models add no BOS, so there is nothing to add


class DetokenizeRequest(_Body):
    """``POST /detokenize`` (llama-server's): token ids -> text."""

    tokens: list[int] = Field(max_length=1 << 18)


class AgentRequest(_Body):
    """``POST /v1/agent``: one turn of Codette's own agent, tools run on the server."""

    prompt: str = Field(min_length=1, max_length=20_000)
    history: list[Message] = Field(default_factory=list, max_length=200)
    perspectives: list[str] = Field(default_factory=list, max_length=11)
    tools: bool = True
    max_tokens: Optional[int] = Field(None, ge=1)
    raw: bool = False  # keep the control markers in the text events and the response's text


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
