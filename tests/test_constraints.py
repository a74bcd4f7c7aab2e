"""Structured output: what a constraint asks (codette.backends.constraints), and that the PyTorch backend
(llguidance, codette.backends.guided) and the GGUF backend (llama.cpp's GBNF, codette.backends.gbnf) hold
an untrained model to it: a JSON schema, forced and named tool calls, and lazy calls after free text.

An untrained model writes noise, so a reply that validates shows the grammar did the work; the same
check without the constraint fails. ``ScriptedModel`` (shared with the agent and server tests) is a
"model" whose logits spell a chosen text, to show a constraint overriding what the model wants.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import jsonschema
import pytest
import torch

from codette.backends.base import SamplingConfig
from codette.backends.constraints import (ConstraintError, Constraint, Function, ToolCalls, UnsupportedSchema,
                                          call_schema, closed, constraint_for)
from codette.backends.gbnf import check_schema, gbnf_grammar, text_avoiding
from codette.model.config import ModelConfig
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import IM_END
from codette.tools.calls import TOOL_CALL_CLOSE, ToolCallParseError, split_tool_calls
from codette.tooltable import SPECS

# Nested objects, arrays, enums, integers and required keys, every part bounded: a noise-writing model
# held to it still finishes inside the reply limit.
SCHEMA = {
    "type": "object",
    "properties": {
        "kind": {"enum": ["point", "line", "area"]},
        "count": {"type": "integer", "minimum": 0, "maximum": 99},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "minItems": 1, "maxItems": 3},
        "origin": {"type": "object", "properties": {"x": {"type": "integer", "minimum": -9, "maximum": 9},
                                                    "ok": {"type": "boolean"}},
                   "required": ["x", "ok"]},
    },
    "required": ["kind", "count", "tags", "origin"],
}
LIGHT = {"type": "function", "function": {"name": "set_light", "parameters": {
    "type": "object", "properties": {"room": {"enum": ["hall", "kitchen"]},
                                     "level": {"type": "integer", "minimum": 0, "maximum": 10}},
    "required": ["room", "level"]}}}
TIMER = {"type": "function", "function": {"name": "timer", "parameters": {
    "type": "object", "properties": {"minutes": {"type": "integer", "minimum": 1, "maximum": 60},
                                     "loud": {"type": "boolean"}},
    "required": ["minutes", "loud"]}}}
TOOLS = [LIGHT, TIMER]
ASK = [{"role": "user", "content": "Describe a shape."}]
SEEDS = 50


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def untrained(tokenizer: CodetteTokenizer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained llama-block checkpoint beside the session's small tokenizer, and its f32 GGUF."""
    from codette.export.gguf_export import export_gguf
    from codette.model.config import padded_vocab
    from tests._export_models import random_checkpoint

    folder = tmp_path_factory.mktemp("untrained")
    tokenizer.save(folder)
    checkpoint = random_checkpoint(folder / "model", folder, vocab_size=padded_vocab(len(tokenizer)),
                                   block_style="llama", max_seq_len=512)
    return checkpoint, export_gguf(checkpoint, folder / "gguf", "f32", modelfile=False).path


@pytest.fixture(scope="module")
def backends(untrained):
    """The untrained model on both local backends (one thread each)."""
    from codette.backends.gguf import GGUFBackend
    from codette.backends.local import LocalBackend

    checkpoint, gguf = untrained
    pair = {"local": LocalBackend.from_checkpoint(checkpoint),
            "gguf": GGUFBackend(gguf, tokenizer_dir=checkpoint.parent, n_threads=1)}
    yield pair
    pair["gguf"].close()


def sampling(seed: int, **kwargs: object) -> SamplingConfig:
    return SamplingConfig(max_new_tokens=100, temperature=1.0, seed=seed, **kwargs)


def valid(text: str, schema: dict) -> bool:
    try:
        jsonschema.validate(json.loads(text), schema)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def checked_calls(text: str, tools: list[dict]) -> list:
    """The reply's calls, each of an offered tool with arguments valid under its schema (else it raises)."""
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    _, calls = split_tool_calls(text)
    for c in calls:
        jsonschema.validate(c.arguments, schemas[c.name])
    return calls


def calls_or_none(text: str) -> list:
    """:func:`checked_calls`, or [] where the reply has no valid call."""
    try:
        return checked_calls(text, TOOLS)
    except (ToolCallParseError, KeyError, jsonschema.ValidationError):
        return []


# -- what is asked -----------------------------------------------------------------------------------------
def test_the_constraint_follows_response_format_and_tool_choice():
    assert constraint_for(SamplingConfig(), TOOLS) is None
    assert constraint_for(SamplingConfig(response_format="json"), None) == Constraint("json", None)
    auto = constraint_for(SamplingConfig(tool_choice="auto"), TOOLS)
    assert auto.calls.required is False and [f.name for f in auto.calls.functions] == ["set_light", "timer"]
    assert constraint_for(SamplingConfig(tool_choice="auto"), None) is None  # nothing to call: free text
    assert constraint_for(SamplingConfig(tool_choice="none"), TOOLS) is None
    required = constraint_for(SamplingConfig(tool_choice="required", parallel_tool_calls=False), TOOLS).calls
    assert required.required and not required.parallel
    named = constraint_for(SamplingConfig(tool_choice={"type": "function", "function": {"name": "timer"}}), TOOLS)
    assert [f.name for f in named.calls.functions] == ["timer"] and named.calls.required
    with pytest.raises(ConstraintError, match="no offered tool is named 'oven'") as err:
        constraint_for(SamplingConfig(tool_choice={"type": "function", "function": {"name": "oven"}}), TOOLS)
    assert err.value.param == "tool_choice"
    with pytest.raises(ConstraintError, match="'required' needs tools"):
        constraint_for(SamplingConfig(tool_choice="required"), None)
    # the agent shows compact schemas and holds calls to the full ones
    full = constraint_for(SamplingConfig(tool_choice="auto", call_schemas=[TIMER]), [LIGHT])
    assert full.calls.functions == (Function("timer", TIMER["function"]["parameters"]),)


def test_schemas_are_closed_and_refs_follow_the_copy():
    schema = {"type": "object", "properties": {"properties": {"type": "object", "properties": {}},
                                               "item": {"$ref": "#/$defs/Item"}},
              "$defs": {"Item": {"type": "object", "properties": {"n": {"type": "integer"}}}}}
    out = closed(schema, "#/anyOf/0/properties/arguments")
    assert out["additionalProperties"] is False and out["$defs"]["Item"]["additionalProperties"] is False
    assert "additionalProperties" not in out["properties"]  # a property named "properties" is a name
    assert out["properties"]["properties"]["additionalProperties"] is False
    assert out["properties"]["item"]["$ref"] == "#/anyOf/0/properties/arguments/$defs/Item"
    assert "additionalProperties" not in schema  # the caller's schema is left alone
    body = call_schema((Function("set_light", LIGHT["function"]["parameters"]),))
    jsonschema.validate({"name": "set_light", "arguments": {"room": "hall", "level": 3}}, body)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "set_light", "arguments": {"room": "hall", "level": 3, "extra": 1}}, body)


def matches(rules: list[str], text: str) -> bool:
    """Run the free-text rules of :func:`text_avoiding` (a finite automaton in GBNF) over ``text``."""
    table = {}
    for rule in rules:
        name, body = rule.split(" ::= ")
        table[name] = [option.rsplit(" ", 1) for option in body.split(" | ") if option != '""']
    state = rules[0].split(" ::= ")[0]
    for char in text:
        for pattern, nxt in table[state]:
            literal = re.fullmatch(r'"\\?(.)"', pattern)
            if literal and literal.group(1) == char or not literal and char not in pattern[2:-1].replace("\\", ""):
                state = nxt
                break
        else:
            return False
    return True


@pytest.mark.parametrize(("word", "text", "ok"), [
    ("<tool_call>", "Let me see. <tool_cal> <tool <<tool_call", True),
    ("<tool_call>", "x<tool_call>y", False),
    ("<tool_call>", "<tool_ca<tool_call>", False),
    ("<tool_call>", "a [^<] - ^ \\ \" ]", True),
    ("abab", "abaab aab", True),   # a word that overlaps itself: the automaton must fall back to "ab"
    ("abab", "aababa", False),
])
def test_free_text_never_contains_the_marker(word, text, ok):
    assert matches(text_avoiding(word, "t"), text) is ok


# -- held to a schema: 50 seeds on each backend ------------------------------------------------------------
@pytest.mark.parametrize("name", ["local", "gguf"])
def test_an_untrained_model_follows_a_schema_only_when_held_to_it(backends, name):
    backend = backends[name]
    start = time.perf_counter()
    held = [backend.chat(ASK, None, sampling(seed, response_format=SCHEMA)) for seed in range(SEEDS)]
    seconds = time.perf_counter() - start
    bad = [text for text in held if not valid(text, SCHEMA)]
    assert not bad, bad[:3]
    free = [backend.chat(ASK, None, sampling(seed)) for seed in range(SEEDS)]
    assert not any(valid(text, SCHEMA) for text in free), free[:3]
    # streamed, the same reply in pieces
    pieces = list(backend.stream(ASK, None, sampling(0, response_format=SCHEMA)))
    assert "".join(p.text for p in pieces).strip() == held[0] and pieces[-1].finish_reason == "stop"
    print(f"{name}: {SEEDS} schema replies in {seconds:.1f} s")


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_forced_named_and_lazy_calls(backends, name):
    backend = backends[name]
    timer = {"type": "function", "function": {"name": "timer"}}
    for seed in range(10):
        (one,) = checked_calls(backend.chat(ASK, TOOLS, sampling(seed, tool_choice="required",
                                                                 parallel_tool_calls=False)), TOOLS)
        (named,) = checked_calls(backend.chat(ASK, TOOLS, sampling(seed, tool_choice=timer)), TOOLS)
        assert named.name == "timer"
        # lazy: free text; a call, if the noise opens one, is held to the tools (a reply cut at the limit aside)
        chunks = list(backend.stream(ASK, TOOLS, sampling(seed, tool_choice="auto")))
        text = "".join(c.text for c in chunks)
        if chunks[-1].finish_reason == "stop":
            checked_calls(text, TOOLS)
        assert not calls_or_none(backend.chat(ASK, TOOLS, sampling(seed)))  # unheld, noise calls nothing
        # a JSON answer with tools offered: the reply is the answer, or calls
        either = backend.chat(ASK, TOOLS, sampling(seed, tool_choice="auto", parallel_tool_calls=False,
                                                   response_format=SCHEMA))
        assert valid(either, SCHEMA) or len(checked_calls(either, TOOLS)) == 1, either


def test_the_agents_tools_are_expressible_on_both_engines(backends):
    """Every tool of the tool table, by its full schema, at once (what the agent holds calls to)."""
    tools = [{"type": "function", "function": {"name": n, "parameters": s.parameters}} for n, s in SPECS.items()]
    for backend in backends.values():
        backend.check_constraint(SamplingConfig(tool_choice="auto", call_schemas=tools), None)
    schema = check_schema(SPECS["search_files"].parameters, "tools")  # "pattern or query": one object each
    assert [b["required"] for b in schema["anyOf"]] == [["pattern"], ["query"]]
    assert "maxLength" not in check_schema(SPECS["write_file"].parameters, "tools")["properties"]["content"]


@pytest.mark.parametrize(("schema", "engines", "needle"), [
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, ("local", "gguf"), "uniqueItems"),
    ({"type": "object", "properties": {"a": {"not": {"type": "string"}}}}, ("local", "gguf"), "not"),
    ({"type": "integer", "minimum": 0}, ("gguf",), "'minimum' and 'maximum' only together"),
    ({"type": "string", "format": "email"}, ("gguf",), "format 'email'"),
])
def test_a_schema_the_grammar_cannot_express_is_refused_by_name(backends, schema, engines, needle):
    for name, backend in backends.items():
        if name in engines:
            with pytest.raises(UnsupportedSchema, match=needle) as err:
                backend.check_constraint(SamplingConfig(response_format=schema))
            assert err.value.param == "response_format"
        else:
            backend.check_constraint(SamplingConfig(response_format=schema))
    bad_tool = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"ids": {"type": "array", "uniqueItems": True}}}}}
    for backend in backends.values():  # in a tool's parameters, beside a good answer schema: "tools" is named
        with pytest.raises(UnsupportedSchema, match="uniqueItems") as err:
            backend.check_constraint(SamplingConfig(tool_choice="auto", response_format=SCHEMA), [bad_tool])
        assert err.value.param == "tools"


def test_a_grammar_llama_cpp_refuses_is_an_error_not_a_crash(backends, monkeypatch):
    import codette.backends.gguf as gguf_module

    monkeypatch.setattr(gguf_module, "gbnf_grammar", lambda constraint: 'root ::= "unclosed')
    with pytest.raises(UnsupportedSchema, match="llama.cpp refused the grammar"):
        backends["gguf"].chat(ASK, None, SamplingConfig(response_format="json"))


def test_the_grammar_text_is_built_once_per_constraint():
    constraint = Constraint(SCHEMA, ToolCalls((Function("timer", TIMER["function"]["parameters"]),), False))
    assert gbnf_grammar(constraint) is gbnf_grammar(constraint)


# -- a model that wants to write something else -------------------------------------------------------------
class ScriptedModel(torch.nn.Module):
    """A stand-in for CodetteModel whose logits spell ``scripts[i]`` in its i-th generation (the last one
    repeats), then the end of the turn. Where a grammar forbids the scripted token, it prefers closing a
    string or an object: a held reply still ends soon.

    It has what the local backend's decoding uses: ``cfg``, ``embed``, ``new_cache`` and the forward call.
    """

    def __init__(self, tokenizer: CodetteTokenizer, scripts: list[str], context: int = 2048) -> None:
        super().__init__()
        self.cfg = ModelConfig(vocab_size=len(tokenizer), d_model=8, n_layers=1, n_heads=1, max_seq_len=context)
        self.embed = torch.nn.Embedding(1, 1)
        self.scripts = [tokenizer.encode(s) + [tokenizer.token_id(IM_END)] for s in scripts]
        self.generations = 0
        self.base = torch.zeros(len(tokenizer))
        for rank, piece in enumerate(['"', "}", IM_END, TOOL_CALL_CLOSE, "\n"]):
            ids = tokenizer.encode(piece)
            if len(ids) == 1:
                self.base[ids[0]] = 5 - rank

    def new_cache(self, batch: int = 1) -> list[int]:
        self.generations += 1
        return []  # the tokens generated so far, after the prompt

    def num_parameters(self) -> int:
        return 1

    def forward(self, idx: torch.Tensor, cache: list[int], last_only: bool = True) -> torch.Tensor:
        script = self.scripts[min(self.generations, len(self.scripts)) - 1]
        step = len(cache)  # the first call reads the prompt and gives the first token's logits
        cache.append(idx.shape[1])
        logits = self.base.clone()
        if step < len(script):
            logits[script[step]] += 10
        return logits.view(1, 1, -1)


def scripted_backend(tokenizer: CodetteTokenizer, scripts: list[str]):
    from codette.backends.local import LocalBackend

    return LocalBackend(ScriptedModel(tokenizer, scripts), tokenizer)


def test_a_constraint_overrides_what_the_model_wants(tokenizer):
    """The model spells a call of an unknown tool with an argument of the wrong type; held to the tools,
    the reply is a call of an offered tool with valid arguments, and unheld it is the model's own text."""
    bad = '<tool_call>\n{"name": "oven", "arguments": {"minutes": "ten"}}\n</tool_call>'
    backend = scripted_backend(tokenizer, [bad])
    assert backend.chat(ASK, TOOLS, SamplingConfig(temperature=0)) == bad
    (held,) = checked_calls(backend.chat(ASK, TOOLS, SamplingConfig(temperature=0, tool_choice="auto")), TOOLS)
    prose = scripted_backend(tokenizer, ["Sure! The answer is 42."])
    text = prose.chat(ASK, None, SamplingConfig(temperature=0, response_format="json"))
    assert isinstance(json.loads(text), dict)
    assert prose.chat(ASK, TOOLS, SamplingConfig(temperature=0, tool_choice="auto")) == "Sure! The answer is 42."
