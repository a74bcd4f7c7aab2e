"""Structured output through `codette serve`, with the official `openai` client as the peer: a pydantic
model (``json_schema``, strict), ``json_object``, ``tool_choice`` required and named, streamed and not,
a schema the grammar cannot express refused with a 400 in OpenAI's error shape, and a held answer that
ends inside ``max_tokens``.

The backends are real PyTorch backends: an untrained model for the pydantic schema (its noise is held to
the schema), and a model that spells prose or a bad call (tests/test_constraints.ScriptedModel) for the
rest, so each reply shows the constraint winning over what the model wants; and the untrained model's
GGUF, whose held decoding is its own loop on llama.cpp's sampler API.
"""

from __future__ import annotations

import json
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.test_constraints import TOOLS, scripted_backend, untrained  # noqa: F401 - fixtures
from tests.test_serve import client, running

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ASK = [{"role": "user", "content": "Describe a shape."}]
BAD_CALL = '<tool_call>\n{"name": "oven", "arguments": {"minutes": "ten"}}\n</tool_call>'
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


class Origin(BaseModel):
    x: int = Field(ge=-9, le=9)
    ok: bool


class Shape(BaseModel):
    kind: Literal["point", "line", "area"]
    count: int = Field(ge=0, le=99)
    tags: list[Literal["red", "green", "blue"]] = Field(min_length=1, max_length=3)
    origin: Origin


def test_parse_with_a_pydantic_model_streamed_and_not(untrained):
    from codette.backends.local import LocalBackend

    with running(LocalBackend.from_checkpoint(untrained[0])) as url:
        c = client(url)
        replies = []
        for seed in range(5):
            r = c.chat.completions.parse(model="codette", messages=ASK, response_format=Shape, temperature=1.0,
                                         seed=seed, max_tokens=100)
            assert isinstance(r.choices[0].message.parsed, Shape) and r.choices[0].finish_reason == "stop"
            replies.append(r.choices[0].message.content)
        with c.chat.completions.stream(model="codette", messages=ASK, response_format=Shape, temperature=1.0,
                                       seed=0, max_tokens=100) as stream:
            final = stream.get_final_completion()
    assert isinstance(final.choices[0].message.parsed, Shape)
    assert final.choices[0].message.content == replies[0]  # the same seed, the same reply, in pieces


class Note(BaseModel):
    title: str
    words: list[str]


def test_a_held_answer_ends_inside_max_tokens(untrained):
    """Unbounded strings and a list: noise would write them until ``max_tokens`` cut the JSON; the reply is
    closed inside the budget instead and parses, streamed and not (codette.backends.finish)."""
    from codette.backends.local import LocalBackend

    with running(LocalBackend.from_checkpoint(untrained[0])) as url:
        c = client(url)
        for seed in range(5):
            r = c.chat.completions.parse(model="codette", messages=ASK, response_format=Note, temperature=1.0,
                                         seed=seed, max_tokens=48)
            assert isinstance(r.choices[0].message.parsed, Note), r.choices[0].message.content
            assert r.usage.completion_tokens <= 48
        with c.chat.completions.stream(model="codette", messages=ASK, response_format=Note, temperature=1.0,
                                       seed=0, max_tokens=48) as stream:
            assert isinstance(stream.get_final_completion().choices[0].message.parsed, Note)


def calls_of(c: openai.OpenAI, stream: bool, **request: object) -> tuple[list[tuple[str, dict]], str]:
    """``(name, arguments)`` of the reply's calls, and its finish reason, streamed or not."""
    if not stream:
        choice = c.chat.completions.create(model="codette", messages=ASK, temperature=0, **request).choices[0]
        return ([(tc.function.name, json.loads(tc.function.arguments)) for tc in choice.message.tool_calls or []],
                choice.finish_reason)
    calls: dict[int, list[str]] = {}
    reason = ""
    for chunk in c.chat.completions.create(model="codette", messages=ASK, temperature=0, stream=True, **request):
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                slot = calls.setdefault(tc.index, ["", ""])
                slot[0] += tc.function.name or ""
                slot[1] += tc.function.arguments or ""
            reason = choice.finish_reason or reason
    return [(name, json.loads(args)) for name, args in calls.values()], reason


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_json_object_and_tool_choice_win_over_what_the_model_wants(tokenizer, stream):
    with running(scripted_backend(tokenizer, [BAD_CALL])) as url:
        c = client(url)
        # the model spells a call of a tool nobody offered; held (tool_choice defaults to auto), it calls one
        (call,), reason = calls_of(c, stream, tools=TOOLS)
        jsonschema.validate(call[1], SCHEMAS[call[0]])
        assert reason == "tool_calls"
        (call,), _ = calls_of(c, stream, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
        jsonschema.validate(call[1], SCHEMAS[call[0]])
        (call,), _ = calls_of(c, stream, tools=TOOLS, tool_choice={"type": "function", "function": {"name": "timer"}})
        assert call[0] == "timer"
        jsonschema.validate(call[1], SCHEMAS["timer"])
    with running(scripted_backend(tokenizer, ["Sure! The answer is 42."])) as url:
        c = client(url)
        request = {"model": "codette", "messages": ASK, "temperature": 0, "response_format": {"type": "json_object"}}
        if stream:
            text = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**request, stream=True)
                           if ch.choices)
        else:
            text = c.chat.completions.create(**request).choices[0].message.content
        assert isinstance(json.loads(text), dict)
        (call,), _ = calls_of(c, stream, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
        jsonschema.validate(call[1], SCHEMAS[call[0]])
        plain = c.chat.completions.create(model="codette", messages=ASK, temperature=0, tools=TOOLS)
        assert plain.choices[0].message.content == "Sure! The answer is 42."  # auto: free text stays free


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_a_gguf_holds_calls_and_answers_behind_the_server(untrained, stream):
    """The GGUF backend's own held decoding (llama.cpp's grammar checking the model's picks) behind the
    server: the untrained model's noise becomes a call of an offered tool, or of the named one, with valid
    arguments, and an answer the pydantic model parses, streamed and not."""
    from codette.backends.gguf import GGUFBackend

    checkpoint, gguf = untrained
    backend = GGUFBackend(gguf, tokenizer_dir=checkpoint.parent, n_threads=1)
    try:
        with running(backend) as url:
            c = client(url)
            (call,), reason = calls_of(c, stream, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                                       max_tokens=100)
            jsonschema.validate(call[1], SCHEMAS[call[0]])
            assert reason == "tool_calls"
            (call,), _ = calls_of(c, stream, tools=TOOLS, max_tokens=100,
                                  tool_choice={"type": "function", "function": {"name": "timer"}})
            assert call[0] == "timer"
            jsonschema.validate(call[1], SCHEMAS["timer"])
            request = {"model": "codette", "messages": ASK, "response_format": Shape, "temperature": 1.0, "seed": 1,
                       "max_tokens": 100}
            if stream:
                with c.chat.completions.stream(**request) as events:
                    parsed = events.get_final_completion().choices[0].message.parsed
            else:
                parsed = c.chat.completions.parse(**request).choices[0].message.parsed
            assert isinstance(parsed, Shape)
    finally:
        backend.close()


UNIQUE = {"type": "object", "properties": {"ids": {"type": "array", "items": {"type": "integer"},
                                                   "uniqueItems": True}}}


def test_what_cannot_be_constrained_is_a_400_naming_it(tokenizer):
    with running(scripted_backend(tokenizer, ["Hi."])) as url:
        c = client(url)
        fmt = {"type": "json_schema", "json_schema": {"name": "ids", "schema": UNIQUE, "strict": True}}
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as err:
                c.chat.completions.create(model="codette", messages=ASK, response_format=fmt, stream=stream)
            assert (err.value.code, err.value.param) == ("unsupported_schema", "response_format")
            assert "uniqueItems" in err.value.message
        odd_tool = {"type": "function", "function": {"name": "pick", "parameters": UNIQUE}}
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="codette", messages=ASK, tools=[odd_tool], tool_choice="required")
        assert err.value.param == "tools" and "uniqueItems" in err.value.message
        # not asked for (tool_choice unset): such tools are offered unheld, as before
        r = c.chat.completions.create(model="codette", messages=ASK, tools=[odd_tool], temperature=0)
        assert r.choices[0].message.content == "Hi."
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="codette", messages=ASK, tools=TOOLS,
                                      tool_choice={"type": "function", "function": {"name": "oven"}})
        assert err.value.param == "tool_choice" and "no offered tool is named 'oven'" in err.value.message
        with pytest.raises(openai.BadRequestError) as err:
            c.chat.completions.create(model="codette", messages=ASK, tool_choice="required")
        assert err.value.param == "tool_choice"
        r = httpx.post(url + "/api/chat", json={"model": "codette", "messages": ASK, "format": UNIQUE,
                                                "stream": False})
        assert r.status_code == 400 and "uniqueItems" in r.json()["error"]  # Ollama's shape on its routes
