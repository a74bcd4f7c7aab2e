"""A held reply ends inside its token budget (codette.backends.finish), on both local engines.

An untrained model held to a call with an unbounded string writes noise into the string until the budget
cuts it: without the finish (``WINDOW = 0``) nearly every reply is a cut, invalid call; with it every
reply is a complete call whose arguments validate, and the text before the finish began is the model's,
token for token.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

import codette.backends.finish as finish_module
from codette.backends.finish import Finish, closers
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCallParseError, split_tool_calls
from tests.test_constraints import ASK, TOOLS, backends, callers, checked_calls, reply_ids, sampling, untrained

__all__ = ["backends", "callers", "untrained"]  # the fixtures this module shares with test_constraints

# An unbounded string and a required integer: noise never closes the string by itself.
NOTE = {"type": "function", "function": {"name": "note", "parameters": {
    "type": "object", "properties": {"text": {"type": "string"}, "count": {"type": "integer"}},
    "required": ["text", "count"]}}}
# An unbounded integer before a required string: digits could go on, a comma must end them.
ANSWER = {"type": "object", "properties": {"count": {"type": "integer"}, "title": {"type": "string"},
                                           "tags": {"type": "array", "items": {"type": "string"}}},
          "required": ["count", "title", "tags"]}
SEEDS = 20

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def note_calls(text: str) -> list:
    """The reply's calls, each ``note`` with valid arguments (else it raises)."""
    _, calls = split_tool_calls(text)
    for call in calls:
        assert call.name == "note"
        jsonschema.validate(call.arguments, NOTE["function"]["parameters"])
    return calls


def is_note_call(text: str) -> bool:
    try:
        return len(note_calls(text)) == 1
    except (ToolCallParseError, AssertionError, jsonschema.ValidationError):
        return False


def test_the_policy_closes_a_string_first(tokenizer):
    texts = [tokenizer.decode([i]) for i in closers(tokenizer.encode)]
    assert texts[0].startswith('"') and texts.index('"') < texts.index(TOOL_CALL_CLOSE) < texts.index("}")
    assert texts.index("}") < texts.index(",")
    assert all(set(text) <= set('"}],\n ') for text in texts if text != TOOL_CALL_CLOSE)


@pytest.mark.parametrize("name", ["local", "gguf"])
@pytest.mark.parametrize("budget", [40, 64])
def test_a_held_call_ends_inside_its_budget(backends, name, budget, monkeypatch):
    """Every reply is one complete ``note`` call with valid arguments; without the finish they are cuts."""
    backend = backends[name]
    held = [backend.chat(ASK, [NOTE], sampling(seed, max_new_tokens=budget, tool_choice="required",
                                               parallel_tool_calls=False)) for seed in range(SEEDS)]
    assert all(is_note_call(text) for text in held), [t for t in held if not is_note_call(t)]
    monkeypatch.setattr(finish_module, "WINDOW", 0)
    cut = [backend.chat(ASK, [NOTE], sampling(seed, max_new_tokens=budget, tool_choice="required",
                                              parallel_tool_calls=False)) for seed in range(SEEDS)]
    assert sum(is_note_call(text) for text in cut) <= SEEDS // 4, cut


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_the_reply_is_the_models_until_the_finish_begins(backends, name, monkeypatch):
    """Before the step the finish began at, the tokens are those of the same seed decoded without it."""
    backend = backends[name]
    began = []
    for seed in range(SEEDS):
        settings = sampling(seed, max_new_tokens=48, tool_choice="required", parallel_tool_calls=False)
        with monkeypatch.context() as patch:
            patch.setattr(finish_module, "WINDOW", 0)
            free = reply_ids(backend, [NOTE], settings)
        ids = reply_ids(backend, [NOTE], settings)
        start = backend.finished_at
        if start is None:  # the noise closed its call in time
            assert ids == free
        else:
            assert ids[:start] == free[:start] and ids != free
            began.append(start)
    assert len(began) >= SEEDS // 2 and max(began) > 0, began  # the model wrote part of a reply, the policy the rest


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_a_json_answer_ends_inside_its_budget(backends, name):
    """... and ends as a complete reply does (``finish_reason`` "stop", not "length": OpenAI's client refuses
    to parse a reply cut by the limit)."""
    for seed in range(SEEDS):
        chunks = list(backends[name].stream(ASK, None, sampling(seed, max_new_tokens=48, response_format=ANSWER)))
        jsonschema.validate(json.loads("".join(c.text for c in chunks)), ANSWER)
        assert chunks[-1].finish_reason == "stop"


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_lazy_calls_are_never_cut(callers, name, monkeypatch):
    """A model that opens ``<tool_call>`` every few tokens, held lazily with parallel calls: every call it
    opens is complete and valid, and with a budget too small for any call the reply opens none (it ends
    where it would have opened one). Without the finish, replies end cut inside a call."""
    backend = callers[name]
    for seed in range(SEEDS):
        text = backend.chat(ASK, TOOLS, sampling(seed, max_new_tokens=60, tool_choice="auto"))
        assert text.count(TOOL_CALL_OPEN) == text.count(TOOL_CALL_CLOSE) == len(checked_calls(text, TOOLS)), text
        short = backend.chat(ASK, TOOLS, sampling(seed, max_new_tokens=6, tool_choice="auto"))
        assert TOOL_CALL_OPEN not in short, short
    monkeypatch.setattr(finish_module, "WINDOW", 0)
    texts = [backend.chat(ASK, TOOLS, sampling(seed, max_new_tokens=60, tool_choice="auto")) for seed in range(SEEDS)]
    assert any(t.count(TOOL_CALL_OPEN) > t.count(TOOL_CALL_CLOSE) for t in texts), texts


def grammar_of(backend, settings, tools):
    """The backend's grammar for ``settings``, as :class:`codette.backends.finish.Grammar`, and what owns it (a
    GGUF hold frees its grammar when it goes)."""
    from codette.backends.guided import MatcherGrammar

    if backend.name == "local":
        return MatcherGrammar(backend._matcher(settings, tools), backend._guide.lengths), None
    hold = backend._hold(settings, tools)
    return hold.grammar, hold


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_a_plan_ends_a_number_where_a_key_must_follow(backends, name):
    """From inside an unbounded integer with required keys after it, the plan is a comma, the keys, and the
    closing brace, written in a few tokens (digits could go on for ever: ``1``, ``11``, ...)."""
    backend = backends[name]
    grammar, _owner = grammar_of(backend, sampling(0, response_format=ANSWER), None)
    for token in backend.tokenize('{"count": 1'):
        grammar.accept(token)
    way = Finish(backend._guide.closers if name == "local" else backend._closers()).plan(grammar, 40)
    assert way is not None and len(way) < 25, way
    jsonschema.validate(json.loads('{"count": 1' + backend.detokenize(way)), ANSWER)


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_an_unheld_reply_is_never_reported_finished(backends, name):
    """``finished_at`` is the last reply's, held or not: an unheld reply after a finished one reports None."""
    backend = backends[name]
    backend.chat(ASK, [NOTE], sampling(0, max_new_tokens=40, tool_choice="required"))
    assert backend.finished_at is not None
    backend.chat(ASK, [NOTE], sampling(0, max_new_tokens=40))
    assert backend.finished_at is None and backend.masked_at == []
