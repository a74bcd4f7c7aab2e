"""The copy documents (codette.data.copydocs): every call parses, validates and copies the request's values;
every answer states the real result; the source is deterministic, opt-in and learned on every token."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from codette.config import DataConfig
from codette.data import copydocs
from codette.data.build import build_dataset
from codette.data.curriculum.toolrun import ToolRunner, replay
from codette.data.pack import encode_document
from codette.data.sources import Document
from codette.errors import CodetteError
from codette.persona import NAME, PERSPECTIVE_MARK, PERSPECTIVES, identity_contradictions
from codette.tokenizer import CodetteTokenizer
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, parse_tool_calls
from codette.tooltable import SPECS, TOOL_NAMES, tool_schema

N_DOCS = 240


@pytest.fixture(scope="module")
def records() -> list[dict]:
    """A few hundred documents of seed 0, each call run for real."""
    return list(copydocs.iter_copy_records(N_DOCS, seed=0))


def _items(text: str) -> list[list[str]]:
    """A call document's items, each its six lines: request, <tool_call>, JSON, </tool_call>, result, answer."""
    return [block.split("\n") for block in text.split("\n\n")]


def _values(arguments: dict) -> list[str]:
    """The strings and numbers of a call (booleans are said in words), read independently of the generator."""
    out: list[str] = []
    for v in arguments.values():
        if isinstance(v, dict):
            out += _values(v)
        elif not isinstance(v, bool):
            out.append(v if isinstance(v, str) else json.dumps(v))
    return out


def _stated(tool: str, args: dict, data: dict, answer: str) -> list[str]:
    """What the answer must repeat verbatim from the tool's result."""
    if "error" in data:
        return [data["error"]]
    if tool == "calculator":
        return [json.dumps(data["result"])]
    if tool == "read_file":
        return [ln for ln in data["content"].splitlines()]
    if tool == "write_file":
        return [str(data["bytes_written"]), args["path"]]
    if tool == "list_directory":
        return data["entries"]
    if tool == "search_files":
        return [m["path"] for m in data.get("matches", [])] + data.get("files", [])
    if tool == "execute_python":
        return [data["stdout"].strip()]
    if tool == "analyze_data":
        return [json.dumps(data["result"])] if "result" in data else \
            [json.dumps(data[k]) for k in ("count", "mean", "min", "max", "median", "std")]
    if tool in ("query_knowledge_base", "web_search"):
        return [r["title"] for r in data["results"][:1]]
    if tool == "http_request":
        return [str(v) for v in data["json"].get("args", {}).values()] + \
            [json.dumps(data["json"][k]) for k in ("temperature_c", "humidity_pct", "wind_kmh", "unix")
             if k in data["json"]]
    if tool == "analyze_image":  # the answer says what was asked: the colour, the size or grayscale
        return [next(s for s in (data["dominant_hex"], f"{data['width']} x {data['height']}",
                                 f"grayscale {json.dumps(data['grayscale'])}") if s in answer)]
    raise AssertionError(tool)


_SCHEMAS = {name: (jsonschema.Draft202012Validator(SPECS[name].parameters),
                    jsonschema.Draft202012Validator(tool_schema(name, required=True)["function"]["parameters"]))
            for name in TOOL_NAMES}


def _check(text: str) -> Counter[str]:
    """Check every item of a call document (AssertionError naming the item otherwise); the calls per tool."""
    calls: Counter[str] = Counter()
    for lines in _items(text):
        assert len(lines) == 6 and lines[1] == TOOL_CALL_OPEN and lines[3] == TOOL_CALL_CLOSE, lines
        (call,) = parse_tool_calls("\n".join(lines[1:4]))
        assert call.name in TOOL_NAMES
        for validator in _SCHEMAS[call.name]:  # the full schema and the compact one the model is shown
            validator.validate(call.arguments)
        request = lines[0]
        assert TOOL_CALL_OPEN not in request
        for value in _values(call.arguments):
            assert value in request, (value, request)
        data = json.loads(lines[4])
        for value in _stated(call.name, call.arguments, data, lines[5]):
            assert value in lines[5], (value, lines[5])
        calls[call.name] += 1
    return calls


def test_every_call_parses_validates_and_copies_the_request(records: list[dict]) -> None:
    """Every call in a few hundred documents: parsed by the tool-call parser, valid against the tool's full
    schema and the compact one the model is shown, each value verbatim in the request line above it, and
    the answer repeating the real result."""
    calls: Counter[str] = Counter()
    for rec in records:
        if rec["template"] == "calls":
            calls += _check(rec["text"])
    assert set(calls) == set(TOOL_NAMES), calls
    assert sum(calls.values()) > 8 * N_DOCS * 0.9


@pytest.mark.parametrize(("old", "new"), [
    (' * ', ' + '),  # the call's operator differs from the request's (the answer's too)
    ('"}}', 'x"}}'),  # a value the request does not hold
    ('"arguments": {"', '"arguments": {"bogus": 1, "'),  # an argument the schema refuses
])
def test_the_check_catches_a_wrong_call(records: list[dict], old: str, new: str) -> None:
    """The check above fails on a call that differs from its request: it is not vacuous."""
    block = next(b for r in records if r["template"] == "calls" for b in r["text"].split("\n\n")
                 if old in b.split("\n")[2])
    lines = block.split("\n")
    _check(block)
    lines[2] = lines[2].replace(old, new, 1)
    with pytest.raises((AssertionError, jsonschema.ValidationError)):
        _check("\n".join(lines))


def test_results_are_what_the_tools_return() -> None:
    """A result line is the tool's own answer: re-run on a fresh workspace rebuilt from the item's setup."""
    rng = random.Random(7)
    with ToolRunner() as runner, ToolRunner() as fresh:
        for tool in TOOL_NAMES:
            item = copydocs.copy_item(rng, runner, tool)
            again = replay({"tool": tool, "tool_arguments": item.arguments, "setup": item.setup}, fresh)
            assert again.content == item.result, tool
            assert item.text().split("\n")[4] == item.result


def test_values_almost_never_repeat(records: list[dict]) -> None:
    """Open-vocabulary values: nearly every file name, folder, expression and word is new."""
    values = []
    for rec in records:
        if rec["template"] == "calls":
            for lines in _items(rec["text"]):
                call = parse_tool_calls("\n".join(lines[1:4]))[0]
                values += [v for k, v in call.arguments.items() if k in ("path", "expression", "code", "content")]
    assert len(values) > 1000
    assert len(set(values)) / len(values) > 0.95


def test_calculator_expressions_keep_the_users_operators(records: list[dict]) -> None:
    """`37 * 91` stays `37 * 91`: the call carries the operator and spacing the request wrote."""
    ops = Counter()
    for rec in records:
        for lines in _items(rec["text"]) if rec["template"] == "calls" else []:
            call = parse_tool_calls("\n".join(lines[1:4]))[0]
            if call.name == "calculator":
                expr = call.arguments["expression"]
                ops.update(re.findall(r"\*\*|//|[-+*/%^]", expr))
                assert expr in lines[0] and json.loads(lines[4])["expression"] == expr
    assert {"+", "-", "*", "/", "//", "%"} <= set(ops), ops


def test_persona_documents_state_the_facts(records: list[dict]) -> None:
    persona = [r["text"] for r in records if r["template"] == "persona"]
    assert 0 < len(persona) < 0.15 * len(records)
    for text in persona:
        assert identity_contradictions(text) == [], text
    joined = "\n".join(persona)
    assert NAME in joined and all(f"{PERSPECTIVE_MARK} {k}:" in joined for k in PERSPECTIVES)
    assert all(f"{t}(" in joined for t in TOOL_NAMES)


def test_documents_are_deterministic_by_seed() -> None:
    with ToolRunner() as runner:
        a = list(copydocs.iter_copy_records(3, seed=4, runner=runner))
        b = list(copydocs.iter_copy_records(3, seed=4, runner=runner))
        c = list(copydocs.iter_copy_records(3, seed=5, runner=runner))
    assert a == b and a != c


def test_repeat_documents_write_each_line_of_fresh_values_twice() -> None:
    """The induction warm-up: every line is followed by itself, values rarely recur across lines, and a share of
    the records (seeded) are repeat documents while the rest stay call and persona documents."""
    text = copydocs.repeat_document(random.Random(5))
    pairs = [block.split("\n") for block in text.strip().split("\n\n")]
    assert len(pairs) >= 10 and all(len(p) == 2 and p[0] == p[1] and p[0].strip() for p in pairs)
    assert len({p[0] for p in pairs}) == len(pairs) and len(text) >= copydocs.REPEAT_CHARS
    recs = list(copydocs.iter_copy_records(60, seed=2, repeat_share=0.5))
    kinds = Counter(r["template"] for r in recs)
    assert 18 <= kinds["repeat"] <= 42 and kinds["calls"] > 10
    assert recs == list(copydocs.iter_copy_records(60, seed=2, repeat_share=0.5))
    assert not any(r["template"] == "repeat" for r in copydocs.iter_copy_records(20, seed=2))


def test_a_copy_document_is_learned_on_every_token(records: list[dict]) -> None:
    """Text records: every token a target, even with assistant-only loss; the call markers are single tokens."""
    text = next(r["text"] for r in records if r["template"] == "calls")
    tok = CodetteTokenizer.train([r["text"] for r in records[:40]], vocab_size=400)
    ids, mask = encode_document(Document(source="copy", text=text), tok, assistant_only=True)
    assert len(ids) > 100 and all(mask)
    assert ids.count(tok.token_id(TOOL_CALL_OPEN)) == text.count(TOOL_CALL_OPEN)


def test_codette_data_adds_copy_documents_only_when_asked(tmp_path: Path) -> None:
    plain = build_dataset(DataConfig(samples=60, seed=3), tmp_path / "plain")
    assert plain.sources == {}
    with_copy = build_dataset(DataConfig(samples=60, seed=3, copy_docs=12), tmp_path / "copy")
    assert with_copy.sources == {"copy": {"available": 12, "used": 12}}
    recs = [json.loads(line) for split in ("train", "val", "test")
            for line in (tmp_path / "copy" / f"{split}.jsonl").read_text().splitlines()]
    copies = [r for r in recs if r.get("category") == "copy"]
    assert len(copies) == 12 and all(set(r) == {"text", "category", "template"} for r in copies)
    # The synthetic conversations are the same ones, with or without copy documents.
    plain_recs = [json.loads(line) for split in ("train", "val", "test")
                  for line in (tmp_path / "plain" / f"{split}.jsonl").read_text().splitlines()]
    assert [r for r in recs if r.get("category") != "copy"] == plain_recs


def test_a_mix_gives_copy_documents_their_ratio(tmp_path: Path) -> None:
    stats = build_dataset(DataConfig(samples=40, seed=1, mix={"synthetic": 0.75, "copy": 0.25}), tmp_path)
    assert stats.sources["copy"]["used"] == 10 and stats.train + stats.val + stats.test == 40
    with pytest.raises(CodetteError, match=r"data.copy_docs \(--copy-docs\) cannot be combined with --mix"):
        build_dataset(DataConfig(samples=40, mix={"synthetic": 0.75, "copy": 0.25}, copy_docs=5), tmp_path)


def test_a_negative_count_names_the_key() -> None:
    with pytest.raises(CodetteError, match=r"config key 'data.copy_docs': expected an integer >= 0, got -3"):
        DataConfig(copy_docs=-3)


def test_the_copy_docs_flag_builds_copy_documents(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from codette.cli.main import app

    res = CliRunner().invoke(app, ["data", "--no-synthetic", "--copy-docs", "6", "--seed", "2", "-o", str(tmp_path)],
                             terminal_width=200)
    assert res.exit_code == 0, res.output
    assert "copy documents (learned on every token)" in res.output
    stats = json.loads((tmp_path / "data" / "stats.json").read_text())
    assert stats["sources"] == {"copy": {"available": 6, "used": 6}} and stats["synthetic"] is None
    assert stats["train"] + stats["val"] + stats["test"] == 6
