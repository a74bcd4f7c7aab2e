"""Structured output: what a constraint asks (codette.backends.constraints), and that the PyTorch backend
(llguidance, codette.backends.guided) and the GGUF backend (llama.cpp's GBNF, codette.backends.gbnf) hold
an untrained model to it: a JSON schema, forced and named tool calls, and lazy calls after free text.

An untrained model writes noise, so a reply that validates shows the grammar did the work; the same
check without the constraint fails. The same model with its ``<tool_call>`` row made large opens calls
every few tokens, for the lazy hold: free text decoded as unheld, then a held call. Both engines let the
model pick first and mask only a refused step, so free text is the unheld text token for token. ``ScriptedModel`` (shared with the agent and server tests) is a
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
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, ToolCallParseError, split_tool_calls
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


def boosted(untrained, tokenizer: CodetteTokenizer, folder: Path, rows: list[int]) -> dict:
    """The untrained model with embedding (and output) ``rows`` made 60 times larger, on both local backends:
    its noise writes those tokens every few steps (wherever the rows point along the hidden state)."""
    from codette.backends.gguf import GGUFBackend
    from codette.backends.local import LocalBackend
    from codette.checkpoint import load_checkpoint, save_checkpoint
    from codette.export.gguf_export import export_gguf

    tokenizer.save(folder)
    state = load_checkpoint(untrained[0])
    for key in ("embed.weight", "lm_head.weight"):
        if key in state["model"]:
            state["model"][key][rows] *= 60
    checkpoint = save_checkpoint(state, folder / "model_boosted.pt")
    gguf = export_gguf(checkpoint, folder / "gguf", "f32", modelfile=False).path
    return {"local": LocalBackend.from_checkpoint(checkpoint),
            "gguf": GGUFBackend(gguf, tokenizer_dir=folder, n_threads=1)}


@pytest.fixture(scope="module")
def callers(untrained, tokenizer: CodetteTokenizer, tmp_path_factory: pytest.TempPathFactory):
    """The ``<tool_call>`` row made large: the noise opens a call every few tokens, so a lazy hold has calls to
    hold, after free text of a few tokens."""
    pair = boosted(untrained, tokenizer, tmp_path_factory.mktemp("caller"), [tokenizer.token_id(TOOL_CALL_OPEN)])
    yield pair
    pair["gguf"].close()


@pytest.fixture(scope="module")
def newliners(untrained, tokenizer: CodetteTokenizer, tmp_path_factory: pytest.TempPathFactory):
    """The newline and tab rows made large: the noise writes raw control characters, which a JSON string may
    hold only escaped."""
    rows = [i for text in ("\n", "\t") for i in tokenizer.encode(text)]
    pair = boosted(untrained, tokenizer, tmp_path_factory.mktemp("newliner"), rows)
    yield pair
    pair["gguf"].close()


def sampling(seed: int, **kwargs: object) -> SamplingConfig:
    """Temperature 1 and room for 100 tokens unless ``kwargs`` say otherwise."""
    return SamplingConfig(**{"max_new_tokens": 100, "temperature": 1.0, "seed": seed, **kwargs})


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
    # an agent with no tool enabled: no call at all; with an answer asked for, the answer
    assert constraint_for(SamplingConfig(tool_choice="auto", call_schemas=[]), None).calls.functions == ()
    assert constraint_for(SamplingConfig(tool_choice="auto", call_schemas=[], response_format="json"), None).answer
    with pytest.raises(ConstraintError, match="'required' needs tools"):
        constraint_for(SamplingConfig(tool_choice="required", call_schemas=[]), TOOLS)


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


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_lazy_calls_of_a_model_that_keeps_opening_them(callers, name):
    """50 seeds of a model whose noise opens ``<tool_call>`` every few tokens: held lazily (one call allowed),
    every reply is its free text and then one call of an offered tool with valid arguments, and that free
    text is the model's own, token for token what it writes unheld with the same seed. Unheld, the calls
    it opens are noise."""
    backend = callers[name]
    held_calls = free_calls = 0
    for seed in range(SEEDS):
        free = backend.chat(ASK, TOOLS, sampling(seed))
        chunks = list(backend.stream(ASK, TOOLS, sampling(seed, tool_choice="auto", parallel_tool_calls=False)))
        held = "".join(c.text for c in chunks).strip()
        assert chunks[-1].finish_reason == "stop", held  # one call, then the grammar ends the reply
        assert len(checked_calls(held, TOOLS)) <= 1
        held_calls += TOOL_CALL_OPEN in held
        free_calls += len(calls_or_none(free))
        assert held.split(TOOL_CALL_OPEN)[0] == free.split(TOOL_CALL_OPEN)[0], (held, free)
        assert (TOOL_CALL_OPEN in held) == (TOOL_CALL_OPEN in free), (held, free)
    assert held_calls >= SEEDS * 0.8 and free_calls == 0, (held_calls, free_calls)


def reply_ids(backend, tools: list[dict] | None, settings: SamplingConfig) -> list[int]:
    """The reply's token ids, as :meth:`chat` decodes them (each backend's own decoding loop)."""
    ids = backend.prompt_ids(ASK, tools)
    decode = backend._generate if backend.name == "local" else backend._tokens
    return list(decode(ids, settings, tools))


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_with_no_tool_to_call_the_reply_opens_none(callers, name):
    """Held to an empty tool list (an agent with no tool enabled), a model that keeps opening calls writes
    text that opens none, and an answer asked for beside it is the answer; with no tools at all (a
    server's plain chat) the reply stays free."""
    backend = callers[name]
    for seed in range(SEEDS // 5):
        held = backend.chat(ASK, None, sampling(seed, tool_choice="auto", call_schemas=[]))
        assert TOOL_CALL_OPEN not in held, held
        assert TOOL_CALL_OPEN in backend.chat(ASK, None, sampling(seed, tool_choice="auto"))
        answer = backend.chat(ASK, None, sampling(seed, tool_choice="auto", call_schemas=[], response_format=SCHEMA))
        assert valid(answer, SCHEMA), answer


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_lazy_free_text_goes_unmasked(backends, name):
    """Free text under a lazy hold is decoded as it is unheld: token for token the unheld reply of the same
    seed up to the first step whose pick the grammar refuses, and only such steps are masked. An untrained
    model's noise is refused now and then even in free text (both engines refuse bytes that break UTF-8;
    llguidance special tokens other than the markers, llama.cpp the padding rows): the text before that is
    the model's own."""
    backend = backends[name]
    before = 0
    for seed in range(SEEDS):
        free = reply_ids(backend, TOOLS, sampling(seed))
        held = reply_ids(backend, TOOLS, sampling(seed, tool_choice="auto"))
        first = backend.masked_at[0] if backend.masked_at else len(free)
        assert held[:first] == free[:first], (seed, first, held, free)
        before += first
    assert before >= SEEDS, before
    reply_ids(backend, TOOLS, sampling(0, tool_choice="required"))
    assert backend.masked_at[0] == 0  # noise is refused where a call must open, and masked


def test_greedy_a_refused_pick_becomes_the_best_token_allowed(backends, monkeypatch):
    """Greedy, the GGUF backend checks the best tokens one by one before it masks the whole vocabulary; both
    ways give the best token the grammar allows, so the replies are the same (and valid)."""
    import codette.backends.gguf as gguf_module

    backend = backends["gguf"]
    asks = [ASK, [{"role": "user", "content": "Set a timer."}], [{"role": "user", "content": "Lights?"}]]
    settings = [SamplingConfig(max_new_tokens=100, temperature=0, **held) for held in (
        {"response_format": SCHEMA}, {"tool_choice": "required", "parallel_tool_calls": False},
        {"tool_choice": {"type": "function", "function": {"name": "timer"}}})]
    checks = []
    allows = gguf_module.Hold.allows
    monkeypatch.setattr(gguf_module.Hold, "allows", lambda hold, token: checks.append(token) or allows(hold, token))
    scanned = [backend.chat(ask, TOOLS, s) for s in settings for ask in asks]
    steps = len(checks)
    monkeypatch.setattr(gguf_module, "CANDIDATES", 0)
    checks.clear()
    masked = [backend.chat(ask, TOOLS, s) for s in settings for ask in asks]
    assert scanned == masked and steps > len(checks)  # the same replies; the scan checked more candidates
    for text in scanned[:3]:
        assert valid(text, SCHEMA), text
    for text in scanned[3:]:
        assert len(checked_calls(text, TOOLS)) == 1


def test_a_held_gguf_reply_reuses_the_prompts_cache(backends, monkeypatch):
    """The held loop evaluates only what the cache does not hold: the prompt once, then one token per step;
    the same prompt again re-evaluates only its last token (for its logits), as ``Llama.generate`` does."""
    backend = backends["gguf"]
    evaluated: list[int] = []
    real = backend.llm.eval
    monkeypatch.setattr(backend.llm, "eval", lambda tokens: (evaluated.append(len(tokens)), real(tokens))[1])
    held = SamplingConfig(max_new_tokens=100, temperature=1.0, seed=3, tool_choice="required")
    backend.llm.reset()
    first = backend.chat(ASK, TOOLS, held)
    prompt = backend.count_tokens(ASK, TOOLS)
    assert evaluated[0] == prompt and set(evaluated[1:]) == {1}, evaluated
    evaluated.clear()
    assert backend.chat(ASK, TOOLS, held) == first  # the same seed, the same reply
    assert evaluated[0] == 1 and set(evaluated[1:]) == {1}, evaluated


NOTE = {"type": "function", "function": {"name": "note", "parameters": {
    "type": "object", "properties": {"text": {"type": "string", "maxLength": 40}}, "required": ["text"]}}}


@pytest.mark.parametrize("name", ["local", "gguf"])
def test_a_held_string_never_holds_a_raw_control_character(newliners, name):
    """JSON strings hold control characters only escaped (RFC 8259): a model whose noise is newlines and tabs,
    held to a call with a string argument, writes calls that ``json.loads`` reads, on both engines."""
    backend = newliners[name]
    free = [backend.chat(ASK, [NOTE], sampling(seed)) for seed in range(10)]
    assert free == [""] * 10  # unheld, it writes nothing but newlines and tabs (a reply is stripped)
    for seed in range(10):
        text = backend.chat(ASK, [NOTE], sampling(seed, tool_choice="required", parallel_tool_calls=False))
        _, (call,) = split_tool_calls(text)  # json.loads refuses a raw control character inside a string
        assert call.name == "note" and not any(ord(c) < 0x20 for c in call.arguments["text"]), text


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


def test_kept_values_are_made_once_copied_out_and_dropped_oldest_first():
    from codette.backends.constraints import Kept

    made, dropped = [], []
    kept = Kept(2, copy=lambda v: v + "'", drop=dropped.append)

    def make(key):
        return lambda: made.append(key) or key

    assert [kept.get(k, make(k)) for k in ("a", "b", "a", "c")] == ["a'", "b'", "a'", "c'"]
    assert made == ["a", "b", "c"] and dropped == ["b"]  # "a" was used again after "b": "b" was the oldest
    with pytest.raises(ValueError):
        kept.get("d", lambda: int("x"))  # an error keeps nothing
    kept.clear()
    assert sorted(dropped) == ["a", "b", "c"] and kept.get("a", make("a")) == "a'" and made[-1] == "a"


def test_each_reply_gets_its_own_copy_of_a_kept_grammar(backends, tokenizer):
    """Both engines keep what they compiled for a constraint and hand each reply a copy: a reply that has
    opened a call leaves the next reply's grammar at its start."""
    forced = SamplingConfig(tool_choice="required")
    opening = tokenizer.encode(TOOL_CALL_OPEN + "\n")
    first, second = (backends["local"]._matcher(forced, TOOLS) for _ in range(2))
    assert first.consume_tokens(opening) and not first.validate_tokens(opening[:1])
    assert second.validate_tokens(opening) == len(opening)
    first, second = (backends["gguf"]._hold(forced, TOOLS) for _ in range(2))
    for token in opening:
        assert first.allows(token)
        first.grammar.accept(token)
    assert not first.allows(opening[0]) and second.allows(opening[0])
    first.close(), second.close()


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


def test_the_natural_run_holds_calls_unless_told_not_to(tokenizer):
    """``codette eval --natural`` holds the model's calls as the agent does, and scores every call it writes;
    ``--no-constrain`` (``constrain=False``) leaves the model's own call."""
    from codette.evaluate import natural as nat
    from codette.evaluate.natural_run import ItemTools, run_item

    item = next(i for i in nat.load_set().items if i.tools == ("read_file",))
    bad = '<tool_call>\n{"name": "read_file", "arguments": {"path": 7}}\n</tool_call>'
    with ItemTools() as tools:
        held = run_item(scripted_backend(tokenizer, [bad, "Done."]), item, tools)
        free = run_item(scripted_backend(tokenizer, [bad, "Done."]), item, tools, constrain=False)
    assert held["written"] == [{"json_valid": 1, "args_valid": 1, "finished": 0}]
    assert held["calls"][0]["name"] == "read_file"
    assert free["written"] == [{"json_valid": 1, "args_valid": 0, "finished": 0}] and not free["calls"]  # refused
    # a path that runs on past the token budget: held, the finishing policy closes the call (and says so)
    runaway = '<tool_call>\n{"name": "read_file", "arguments": {"path": "' + "notes/" * 100
    with ItemTools() as tools:
        held = run_item(scripted_backend(tokenizer, [runaway, "Done."]), item, tools, max_new_tokens=60)
        free = run_item(scripted_backend(tokenizer, [runaway, "Done."]), item, tools, max_new_tokens=60,
                        constrain=False)
    assert held["written"][0] == {"json_valid": 1, "args_valid": 1, "finished": 1}, held
    assert held["calls"][0]["arguments"]["path"].startswith("notes/notes/")
    assert free["written"][0] == {"json_valid": 0, "args_valid": 0, "finished": 0}, free


def test_the_gguf_mask_by_first_byte_is_the_whole_vocabularys(backends, tokenizer):
    """The GGUF grammar checks the one-byte tokens, then only the tokens starting with a byte it takes: the
    same mask as checking every token, at every step of a call, a JSON answer and free text."""
    import numpy as np

    from codette.backends.gguf import TOKEN_DATA, FirstChars

    backend = backends["gguf"]
    assert backend._firsts is not None and isinstance(backend._firsts, FirstChars)
    texts = {"required": TOOL_CALL_OPEN + '\n{"name": "set_light", "arguments": {"room": "kitchen", "level": 7}}\n'
                         + TOOL_CALL_CLOSE,
             "auto": 'Lights on.\n' + TOOL_CALL_OPEN + '\n{"name": "timer", "arguments": {"minutes": 5, "lo',
             "answer": '{"kind": "line", "count": 12, "tags": ["red"], "origin": {"x": -3, "ok": true}}'}
    checked = 0
    for case, text in texts.items():
        settings = SamplingConfig(response_format=SCHEMA) if case == "answer" else SamplingConfig(tool_choice=case)
        hold = backend._hold(settings, TOOLS)
        grammar = hold.grammar
        for token in [*tokenizer.encode(text), None]:
            masks = []
            for firsts in (backend._firsts, None):
                grammar.firsts = firsts
                cells = np.zeros(grammar.n_vocab, TOKEN_DATA)
                cells["id"] = np.arange(grammar.n_vocab)
                grammar.mask(cells)
                masks.append(np.isfinite(cells["logit"]))
            assert (masks[0] == masks[1]).all() and masks[0].any(), (case, token)
            checked += 1
            if token is not None:
                grammar.accept(token)
        hold.close()
    assert checked > 60
