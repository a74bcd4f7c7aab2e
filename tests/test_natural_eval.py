"""The natural-prompt set: its file, its scorer through the real agent loop and tools, and that it stays out of
training (no generator phrasing equals one of its prompts; the data stage never reads it)."""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

import codette
from codette.backends.base import Chunk, collect
from codette.errors import CodetteError
from codette.evaluate import natural as nat
from codette.evaluate.natural_run import ItemTools, run_natural
from codette.evaluate.tool_metric import schema_error
from codette.persona import (CAPABILITIES, CONSCIOUSNESS_MARK, KIND, LIMITS, NAME, PERSPECTIVE_MARK,
                             PERSPECTIVE_VOCABULARY, PURPOSE)
from codette.scoring.stats import wilson
from codette.scoring.tool_facts import leaves
from codette.tools import ToolCall, format_tool_calls
from codette.tooltable import TOOL_NAMES, tool_schema

SRC = Path(codette.__file__).parent


@pytest.fixture(scope="module")
def natural_set() -> nat.NaturalSet:
    return nat.load_set()


# ------------------------------------------------------------------------------------------------
# The file
# ------------------------------------------------------------------------------------------------
MINIMUM = {"simple": 33, "multiple": 22, "parallel": 8, "parallel_multiple": 6, "relevance": 10, "multi_turn": 8,
           "identity": 20, "perspective": 22, "chat": 10}


def test_the_set_has_its_categories_and_covers_every_tool_and_perspective(natural_set):
    items = natural_set.items
    assert len(items) >= 150 and natural_set.version == nat.SET_VERSION and len(natural_set.sha256) == 64
    counts = Counter(i.category for i in items)
    assert all(counts[c] >= n for c, n in MINIMUM.items()), counts
    for cat in ("simple", "multiple"):
        tools = Counter(c.tool for i in items if i.category == cat for c in i.calls)
        assert set(tools) == set(TOOL_NAMES) and min(tools.values()) >= (3 if cat == "simple" else 2), (cat, tools)
    assert {i.perspective for i in items if i.category == "perspective"} == set(PERSPECTIVE_VOCABULARY)
    assert len({i.qtype for i in items if i.category == "identity"}) >= 12
    assert len({i.id for i in items}) == len(items)
    # BFCL's shapes: parallel = one tool several times, parallel_multiple = several tools.
    assert all(len(i.calls) >= 2 and len({c.tool for c in i.calls}) == 1 for i in items if i.category == "parallel")
    assert all(len({c.tool for c in i.calls}) >= 2 for i in items if i.category == "parallel_multiple")
    assert all(len(i.turns) >= 2 for i in items if i.category == "multi_turn")


def test_every_expected_call_validates_against_the_schema_the_model_sees_and_the_toolbox(natural_set):
    calls = [c for i in natural_set.items for c in i.calls]
    assert len(calls) >= 110
    for c in calls:
        jsonschema.validate(c.arguments, tool_schema(c.tool, required=True)["function"]["parameters"])
        assert schema_error(c.tool, c.arguments) is None, (c.tool, c.arguments)
        assert c.carry, c  # every call carries something the user wrote


def test_every_check_is_grounded_in_what_the_real_tools_return(natural_set):
    """Run each item's reference calls on its fixture: every answer value is in the results, every state holds."""
    with ItemTools() as tools:
        for item in (i for i in natural_set.items if i.kind == "tool"):
            tools.prepare(item)
            results = [tools.run_call(ToolCall(c.tool, c.arguments)) for c in sorted(item.calls, key=lambda c: c.turn)]
            assert all(r.ok for r in results), (item.id, [r.content for r in results])
            text = " ".join(x for r in results for x in leaves(json.loads(r.content)))
            missing = [a for a in item.answer if not nat.phrase_present(a, text)]
            assert not missing, (item.id, missing)
            for path, texts in item.state.items():
                content = (tools.file_text(path) or "").lower()
                assert all(t.lower() in content for t in texts), (item.id, path, content)


def test_a_bad_item_is_one_clear_line_naming_the_item_and_field(tmp_path):
    good = {"id": "x", "category": "simple", "tools": ["calculator"], "turns": ["what's 2 + 3"],
            "calls": [{"tool": "calculator", "arguments": {"expression": "2 + 3"}}], "answer": ["5"]}
    path = tmp_path / "set.yaml"
    cases = [({**good, "category": "simpel"}, "category must be one of"),
             ({**good, "tools": ["calculater"]}, "unknown tool 'calculater'"),
             ({**good, "calls": [{"tool": "read_file", "arguments": {"path": "a"}}]}, "does not offer"),
             ({**good, "calls": [{"tool": "calculator", "arguments": {"expression": "9 * 9"}}]}, "carries no value"),
             ({**good, "calls": [{**good["calls"][0], "carry": ["7"]}]}, "not in the user's words"),
             ({**good, "answer": None}, "needs an answer or a state"),
             ({**good, "colour": 1}, "unknown field 'colour'"),
             ({"id": "y", "category": "identity", "qtype": "who", "turns": ["hi"]}, "qtype must be one of")]
    for item, message in cases:
        path.write_text(json.dumps({"version": 1, "items": [item]}))  # JSON is YAML
        with pytest.raises(CodetteError) as err:
            nat.load_set(path)
        assert message in str(err.value) and "item 1" in str(err.value) and "\n" not in str(err.value), str(err.value)
    path.write_text(json.dumps({"version": 2, "items": [good]}))
    with pytest.raises(CodetteError, match="version must be 1"):
        nat.load_set(path)
    path.write_text(json.dumps({"version": 1, "items": [good]}))
    assert nat.load_set(path).items[0].calls[0].carry == ("2", "3")


# ------------------------------------------------------------------------------------------------
# The rules, on small cases
# ------------------------------------------------------------------------------------------------
def test_copy_rule_carries_the_values_the_user_wrote():
    assert nat.carried_values({"expression": "4821 * 37"}, ["whats 4821 times 37"]) == ("4821", "37")
    assert nat.carried_values({"path": "pantry/spices.txt"}, ["open pantry/spices.txt"]) == ("pantry", "spices.txt")
    assert nat.carried_values({"expression": "2350 * 18 / 100"}, ["18% of 2,350?"]) == ("2350", "18")
    url = {"url": "http://localhost:8000/weather", "params": {"city": "Oban"}}
    assert nat.carried_values(url, ["how is Oban? localhost:8000"]) == ("localhost", "8000", "oban")
    assert nat.carries({"expression": "37*4821"}, ("4821", "37"))  # order and spacing are free
    assert not nat.carries({"expression": "4821 * 36"}, ("4821", "37"))
    assert nat.carries({"url": "http://localhost:8000/weather?city=oban"}, ("localhost", "8000", "oban"))
    assert nat.carries({"expression": "2350.0 * 0.18"}, ("2350",)) and not nat.carries({"expression": "235"}, ("2350",))


def test_answer_values_match_words_exactly_and_numbers_at_their_precision():
    assert nat.phrase_present("12.5", "it is 12.50 exactly") and not nat.phrase_present("12.5", "about 12.4")
    assert nat.phrase_present("178377", "that's 178,377.") and nat.phrase_present("145", "(1250-380)/6 = 145.0")
    assert nat.phrase_present("star anise", "Star anise and cardamom") and not nat.phrase_present("star anise", "star")
    assert not nat.phrase_present("3.33", "3.3")


def test_tool_item_scores_right_tool_copy_and_task_success_separately(natural_set):
    item = next(i for i in natural_set.items if i.id == "parallel-calc-1")  # 93 * 41 and 7008 / 12
    good = [{"name": "calculator", "arguments": {"expression": "7008/12"}},
            {"name": "calculator", "arguments": {"expression": "93*41"}}]
    s = nat.score_tool_item(item, good, "3813 and 584", {})
    assert (s["right_tool"], s["copy"], s["task_success"]) == (1, 1, 1)
    s = nat.score_tool_item(item, good, "3813 and 585", {})
    assert (s["right_tool"], s["copy"], s["task_success"]) == (1, 1, 0) and "584" in s["error"]
    wrong = [good[0], {"name": "calculator", "arguments": {"expression": "93*14"}}]
    assert nat.score_tool_item(item, wrong, "3813 and 584", {})["copy"] == 0
    one = nat.score_tool_item(item, good[:1], "584", {})
    assert one["right_tool"] == 0 and one["copy"] == 0  # a parallel request needs both calls
    stray = nat.score_tool_item(item, [*good, {"name": "read_file", "arguments": {"path": "a"}}], "3813 584", {})
    assert stray["right_tool"] == 0 and stray["task_success"] == 0 and "read_file" in stray["error"]


def test_figures_carry_n_and_the_wilson_interval():
    results = [{"id": f"t{i}", "category": "simple", "kind": "tool",
                "score": {"right_tool": 1, "copy": int(i < 2), "task_success": int(i == 0)}} for i in range(3)]
    results.append({"id": "a", "category": "chat", "kind": "abstain", "score": {"abstained": 1}})
    items = tuple(nat.Item(f"t{i}", "simple", ("calculator",), ("1+1",),
                           calls=(nat.ExpectedCall("calculator", {"expression": "1+1"}, 0, ("1",)),))
                  for i in range(3))
    figs = nat.summarize(results, items)
    copy = figs["figures"]["copy"]
    assert copy["value"] == pytest.approx(2 / 3) and copy["n"] == 3 and copy["method"] == "wilson"
    # Wilson for 2 of 3 written out: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (...)
    z, n, p = 1.959963984540054, 3, 2 / 3
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    assert (copy["low"], copy["high"]) == pytest.approx((centre - half, centre + half)) == wilson(2, 3)
    assert figs["figures"]["abstain"]["value"] == 1.0 and figs["figures"]["abstain"]["n"] == 1
    assert math.isnan(figs["figures"]["identity"]["value"]) and figs["figures"]["identity"]["n"] == 0
    assert figs["by_tool"]["calculator"]["task_success"]["n"] == 3
    assert figs["by_category"]["simple"]["right_tool"]["value"] == 1.0


# ------------------------------------------------------------------------------------------------
# Through the agent loop and the real tools, with scripted backends
# ------------------------------------------------------------------------------------------------
FACTS = (f"{NAME} here: I am {KIND}. I have eleven perspectives and eleven tools. {LIMITS[0]}; I check with my tools "
         f"when I am unsure. " + ". ".join(s for _, s in CAPABILITIES.values()) + f". My purpose is {PURPOSE}. "
         "I never invent a tool's result, and I aim to be honest.")


class Oracle:
    """Answers each item as a good model would: the expected calls of this turn, then the tools' results in words."""

    name = "oracle"

    def __init__(self, item: nat.Item, mangle: bool = False) -> None:
        self.item, self.mangle = item, mangle

    def _reply(self, messages: list[dict]) -> str:
        item = self.item
        turn = sum(1 for m in messages if m["role"] == "user") - 1
        if messages[-1]["role"] == "tool":  # relay what the tools said
            since = max(i for i, m in enumerate(messages) if m["role"] == "user")
            values = [x for m in messages[since:] if m["role"] == "tool" for x in leaves(json.loads(m["content"]))]
            return "Here is what I found: " + " ".join(values)
        calls = [c for c in item.calls if c.turn == turn]
        if calls:
            return format_tool_calls([ToolCall(c.tool, BAD_ARGS[c.tool] if self.mangle else c.arguments)
                                      for c in calls])
        if item.category == "identity":
            return f"{CONSCIOUSNESS_MARK} " + {"yes": "Yes. ", "no": "No. "}.get(item.polarity or "", "") + FACTS
        if item.category == "perspective":
            words = sorted(PERSPECTIVE_VOCABULARY[item.perspective or ""])
            return f"{PERSPECTIVE_MARK} {item.perspective} " + " ".join(words)
        return "Happy to help, no tool needed for that."

    def stream(self, messages, tools=None, sampling=None):
        yield Chunk(self._reply(messages), finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None):
        return collect(self.stream(messages, tools, sampling)).text


# Valid arguments that carry nothing the user wrote: the right tool with the wrong values.
BAD_ARGS = {"read_file": {"path": "zz.txt"}, "write_file": {"path": "zz.txt", "content": "zz"},
            "list_directory": {"path": "."}, "search_files": {"query": "zz"}, "execute_python": {"code": "print(0)"},
            "calculator": {"expression": "0 + 0"}, "analyze_data": {"path": "zz.csv"},
            "query_knowledge_base": {"query": "zz"}, "http_request": {"url": "http://localhost:8000/echo"},
            "web_search": {"query": "zz"}, "analyze_image": {"path": "zz.png"}}


class PerItem:
    """One backend for the whole set that hands each item to its own Oracle (items run in order)."""

    name = "per-item"

    def __init__(self, items, mangle: bool = False) -> None:
        self.by_prompt = {i.turns[0]: Oracle(i, mangle) for i in items}
        assert len(self.by_prompt) == len(items)  # each item opens with its own message

    def stream(self, messages, tools=None, sampling=None):
        first = next(m["content"] for m in messages if m["role"] == "user")
        return self.by_prompt[first].stream(messages, tools, sampling)


class Silent:
    name = "silent"

    def stream(self, messages, tools=None, sampling=None):
        yield Chunk("I am not sure.", finish_reason="stop")


@pytest.fixture(scope="module")
def oracle_results(natural_set):
    return run_natural(PerItem(natural_set.items), natural_set.items)


def test_a_backend_that_answers_correctly_scores_100_percent_everywhere(natural_set, oracle_results):
    failed = [(r["id"], r["score"], r.get("error")) for r in oracle_results
              if not (r["score"].get("task_success", 1) and r["score"].get("copy", 1) and r["score"].get("abstained", 1)
                      and r["score"].get("score", 1) and r["score"].get("adherent", 1))]
    assert not failed, failed[:5]
    summary = nat.summarize(oracle_results, natural_set.items)
    for key in ("right_tool", "copy", "task_success", "abstain", "identity", "perspective"):
        f = summary["figures"][key]
        assert f["value"] == 1.0 and f["n"] > 0 and f["low"] < 1.0 == f["high"], (key, f)
    assert set(summary["by_tool"]) == set(TOOL_NAMES) and set(summary["by_category"]) == set(nat.CATEGORIES)
    # The calls really ran: a written file, a parallel pair of results, the fixture server's weather.
    by_id = {r["id"]: r for r in oracle_results}
    assert [c["ok"] for c in by_id["parallel-calc-2"]["calls"]] == [True] * 3
    assert '"temperature_c": 7.2' in by_id["simple-http-1"]["calls"][0]["result"]
    assert [c["turn"] for c in by_id["multiturn-1"]["calls"]] == [0, 1]


def test_right_tools_with_wrong_values_lose_copy_and_task_success(natural_set):
    items = tuple(i for i in natural_set.items if i.kind == "tool")
    summary = nat.summarize(run_natural(PerItem(items, mangle=True), items), items)["figures"]
    assert summary["right_tool"]["value"] == 1.0
    assert summary["copy"]["value"] < 0.05 and summary["task_success"]["value"] < 0.1, summary


def test_a_backend_that_never_helps_scores_low_but_abstains(natural_set):
    summary = nat.summarize(run_natural(Silent(), natural_set.items), natural_set.items)["figures"]
    assert summary["right_tool"]["value"] == summary["copy"]["value"] == summary["task_success"]["value"] == 0.0
    assert summary["identity"]["value"] == 0.0 and summary["perspective"]["value"] == 0.0
    assert summary["abstain"]["value"] == 1.0 and summary["abstain"]["n"] >= 22


def test_a_call_to_a_tool_the_item_does_not_offer_is_refused_and_scored_wrong(natural_set):
    item = next(i for i in natural_set.items if i.id == "relevance-1")  # only the calculator is offered

    class Caller(Silent):
        def stream(self, messages, tools=None, sampling=None):
            if messages[-1]["role"] == "user":
                yield Chunk(format_tool_calls([ToolCall("read_file", {"path": "a.txt"})]))
            else:
                yield Chunk("done")

    r = run_natural(Caller(), (item,))[0]
    assert r["score"]["abstained"] == 0 and r["calls"] == []  # refused before running, repaired, never run


# ------------------------------------------------------------------------------------------------
# Kept out of training
# ------------------------------------------------------------------------------------------------
def _norm(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def generator_user_messages(per_kind: int = 1500, seed: int = 1234) -> set[str]:
    """Many user messages of the data generator (fixed seed), tool requests with and without their lead-ins
    (a scenario's prompt is built without running its tool), and the identity questions bare."""
    from codette.config import ToolMixConfig
    from codette.data.curriculum import identity, mixed, perspectives
    from codette.data.curriculum.tools.base import LEADS
    from codette.data.curriculum.tools.no_tool import no_tool
    from codette.data.curriculum.tools.scenarios import SCENARIOS

    rng, mix = random.Random(seed), ToolMixConfig()
    out: set[str] = set()
    for make in SCENARIOS.values():
        for _ in range(per_kind):
            prompt = make(rng, mix).prompt
            out.update({prompt, *(lead + prompt for lead in LEADS)})
    draws = [lambda: no_tool(rng, mix), lambda: identity.consciousness_sample(rng), lambda: mixed.mixed_sample(rng),
             *(lambda k=k: perspectives.perspective_sample(rng, k) for k in perspectives.STYLES)]
    for draw in draws:
        for _ in range(per_kind):
            out.update(m["content"] for m in draw().messages if m["role"] == "user")
    # The identity questions bare as well (drawn, most wear a greeting or a name).
    out.update(ask for _, ask in identity.IDENTITY_ASKS + identity.INTENT_ASKS)
    out.update(identity.PERSPECTIVE_ASKS + identity.TOOL_ASKS + identity.LIMIT_ASKS + identity.REFLECT_ASKS)
    out.update(ask for asks in identity.CAPABILITY_ASKS.values() for ask in asks)
    return {_norm(t) for t in out}


def test_no_generator_phrasing_equals_a_prompt_of_the_set(natural_set):
    generated = generator_user_messages()
    assert len(generated) > 20000
    prompts = {_norm(t): i.id for i in natural_set.items for t in i.turns}
    clash = sorted(prompts[p] for p in prompts.keys() & generated)
    assert not clash, clash
    # The check can fail: the generator's own wording is caught.
    assert _norm("Introduce yourself.") in generated and _norm("Are you ChatGPT?") in generated


_AUDIT = ("import json, sys\n"
          "opened = []\n"
          "sys.addaudithook(lambda ev, args: opened.append(str(args[0])) if ev == 'open' and args else None)\n"
          "from codette.data import synthetic\n"
          "synthetic.generate(40, seed=3)\n"
          "print(json.dumps([sorted(m for m in sys.modules if m.startswith('codette.evaluate')), opened]))\n")


def test_the_data_stage_never_reads_the_set():
    """No data module names the file or imports the evaluation, and generating data opens no such file."""
    for path in (SRC / "data").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert nat.SET_FILE not in text and "evaluate.natural" not in text and "codette.evaluate" not in text, path
    proc = subprocess.run([sys.executable, "-c", _AUDIT], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    modules, opened = json.loads(proc.stdout.splitlines()[-1])
    assert modules == [] and len(opened) > 10
    assert not [p for p in opened if nat.SET_FILE in p or "codette/evaluate" in p]


# ------------------------------------------------------------------------------------------------
# Wired into `codette eval`
# ------------------------------------------------------------------------------------------------
def test_eval_report_gets_a_natural_section_and_its_tables(natural_set, tmp_path):
    from rich.console import Console

    from codette.evaluate.run import _add_behavior
    from codette.evaluate.summary import console_tables, markdown

    report: dict = {}
    seen = []
    _add_behavior(report, PerItem(natural_set.items), tmp_path / "model.pt", None, 0, 64, 0, None, "test",
                  natural=True, on_natural=lambda i, n, r: seen.append((i, n)))
    section = report["natural"]
    assert section["set"]["items"] == len(natural_set.items) == len(report["natural_results"]) == len(seen)
    assert section["set"]["sha256"] == natural_set.sha256 and section["figures"]["task_success"]["value"] == 1.0
    json.dumps(section, allow_nan=True)  # eval.json-ready
    md = markdown({"checkpoint": "m.pt", **report})
    assert "## Natural prompts" in md and "| parallel_multiple | task_success | 100.0%" in md
    console = Console(record=True, width=120)
    for table in console_tables(report):
        console.print(table)
    assert "Natural prompts" in console.export_text()


def test_codette_eval_offers_the_natural_flag():
    from typer.testing import CliRunner

    from codette.cli.main import app

    result = CliRunner().invoke(app, ["eval", "--help"])
    assert result.exit_code == 0 and "--natural" in result.output


def test_a_real_checkpoint_backend_runs_the_items_and_a_short_context_is_reported_not_fatal(natural_set, tokenizer):
    """A PyTorch model (random weights) behind LocalBackend: token counting and context fitting apply."""
    import torch

    from codette.backends.local import LocalBackend
    from codette.model import ModelConfig
    from codette.model.config import padded_vocab
    from codette.model.transformer import CodetteModel

    picked = tuple(next(i for i in natural_set.items if i.category == c) for c in nat.CATEGORIES)
    for ctx, fits in ((1024, True), (64, False)):
        torch.manual_seed(0)
        cfg = ModelConfig(vocab_size=padded_vocab(len(tokenizer)), d_model=32, n_layers=1, n_heads=2, max_seq_len=ctx)
        results = run_natural(LocalBackend(CodetteModel(cfg).eval(), tokenizer), picked, max_new_tokens=6)
        assert [r["id"] for r in results] == [i.id for i in picked]
        assert all(isinstance(r["final"], str) and r["seconds"] > 0 and "score" in r for r in results)
        errors = [r.get("error") or "" for r in results]
        if fits:
            assert not any("context" in e for e in errors), errors
        else:
            assert all("context is 64 tokens" in e for e in errors), errors
            assert all(r["score"].get("task_success", 0) == 0 for r in results)
