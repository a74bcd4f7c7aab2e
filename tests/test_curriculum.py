"""The curriculum (data v2): perspectives in their styles, real tool results, one set of identity facts.

Complements tests/test_data.py (determinism, shares, split, packing): here every tool result is
re-run on a fresh workspace, every call is checked against its schema, and each category's content
is checked against the structures the evaluation imports (styles.VOCABULARY, facts).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import jsonschema
import pytest

from codette.data import synthetic
from codette.data.card import write_card
from codette.data.curriculum.styles import STYLES, VOCABULARY, dominant_style, style_hits
from codette.data.curriculum.toolrun import CANONICAL_BASE, ToolRunner, replay
from codette.evaluate.probes import probe_from_record
from codette.persona import NAME, PERSPECTIVES, identity_contradictions
from codette.model.presets import PRESETS
from codette.tools import Toolbox, parse_tool_calls
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import assistant_spans, render
from codette.tooltable import TOOL_NAMES
from tests._pipeline import codette


@pytest.fixture(scope="module")
def data() -> list[dict]:
    """1500 records (seed 11), train and val, as they are written to JSONL."""
    train, val, _ = synthetic.generate(1500, seed=11)
    return [s.to_json() for s in train + val]


def _by(data: list[dict], category: str) -> list[dict]:
    return [r for r in data if r["category"] == category]


def _answer(rec: dict) -> str:
    return rec["messages"][-1]["content"]


# ------------------------------------------------------------------------------------------------
# Tools
# ------------------------------------------------------------------------------------------------
def test_every_tool_result_equals_a_rerun_on_a_fresh_workspace(data: list[dict], tmp_path: Path) -> None:
    calls = [r for r in _by(data, "tools") if r["tool"]]
    assert {r["tool"] for r in calls} == set(TOOL_NAMES)
    with ToolRunner(tmp_path / "replay") as runner:  # a different folder from the generator's
        for rec in calls:
            result = replay(rec, runner)
            tool_msg = next(m for m in rec["messages"] if m["role"] == "tool")
            assert result.content == rec["expected_result"] == tool_msg["content"], rec["template"]
            assert result.ok == rec["tool_ok"]


def test_every_tool_call_validates_against_its_schema(data: list[dict], tmp_path: Path) -> None:
    toolbox = Toolbox(tmp_path / "ws", enabled=TOOL_NAMES)  # execute_python is off by default
    n = 0
    for rec in _by(data, "tools"):
        shown = {t["function"]["name"]: t["function"]["parameters"] for t in rec["tools"]}
        assert 1 <= len(shown) == len(rec["tools"]) <= len(TOOL_NAMES)  # no tool shown twice
        calls = [c["function"] for m in rec["messages"] for c in m.get("tool_calls") or []]
        if rec.get("chain"):  # several calls (replayed in test_chains_and_follow_ups_replay_their_calls)
            for c in rec["chain"]:
                toolbox.validate(c["tool"], c["arguments"])
                jsonschema.validate(c["arguments"], shown[c["tool"]])
                n += 1
            continue
        if rec["tool"] is None:
            assert not calls and rec["tool_arguments"] is None
            continue
        assert len(calls) == 1 and calls[0]["name"] == rec["tool"] and calls[0]["arguments"] == rec["tool_arguments"]
        assert rec["tool"] in shown
        toolbox.validate(rec["tool"], rec["tool_arguments"])  # the real, full schema (raises if invalid)
        jsonschema.validate(rec["tool_arguments"], shown[rec["tool"]])  # the compact schema the model sees
        # The text the model learns parses back to the same call.
        text, spans = assistant_spans(rec["messages"], rec["tools"])
        parsed = parse_tool_calls(text[spans[0][0]:spans[0][1]])
        assert [(c.name, c.arguments) for c in parsed] == [(rec["tool"], rec["tool_arguments"])]
        n += 1
    assert n > 200


def test_chains_and_follow_ups_replay_their_calls(data: list[dict]) -> None:
    """Two-call conversations: each call validates, replays to the recorded result, the second call
    carries a value from the first result (the file listed, the total computed, the result referred to),
    and the final answer states the last result."""
    chains = [r for r in _by(data, "tools") if r.get("chain")]
    assert len(chains) >= 20 and {r["scenario"] for r in chains} == {"followup", "list_then_read",
                                                                    "table_then_calculate", "drill"}
    runner = ToolRunner()
    for rec in chains:
        calls = [c["function"] for m in rec["messages"] for c in m.get("tool_calls") or []]
        assert [(c["name"], c["arguments"]) for c in calls] == [(c["tool"], c["arguments"]) for c in rec["chain"]]
        results = [m["content"] for m in rec["messages"] if m["role"] == "tool"]
        assert results == [c["result"] for c in rec["chain"]]
        for c in rec["chain"]:
            setup = c.get("setup", rec["setup"] if c["tool"] != "calculator" else {})
            assert runner.run(setup, c["tool"], c["arguments"]).content == c["result"]
        assert probe_from_record(rec, "x:1") is None  # the one-call probes leave chains out
        if rec["scenario"] == "drill":  # unrelated requests: one call per user turn, each tool in the list
            roles = [m["role"] for m in rec["messages"] if m["role"] != "system"]
            assert 3 <= len(calls) <= 5 and roles == ["user", "assistant", "tool", "assistant"] * len(calls)
            assert {c["name"] for c in calls} <= {t["function"]["name"] for t in rec["tools"]}
            continue
        first, second = json.loads(results[0]), rec["chain"][1]["arguments"]
        carried = {"followup": lambda: str(first["result"]) in second["expression"],
                   "list_then_read": lambda: second["path"].endswith(first["entries"][0]),
                   "table_then_calculate": lambda: second["expression"].startswith(
                       str(first["result"]).removesuffix(".0"))}[rec["scenario"]]
        assert carried(), rec
        last = json.loads(results[-1])
        answer = rec["messages"][-1]["content"]
        if "result" in last:
            assert str(last["result"]).removesuffix(".0") in answer.replace(",", ""), (answer, last)


def test_tool_lists_are_the_ones_deployed_prompts_send(data: list[dict]) -> None:
    """Most tool conversations show exactly the list the agent sends (its default tools, in order, as
    the persona describes them); some all eleven, some a client's few, some reworded descriptions."""
    from codette.agent.core import default_tools
    from codette.tooltable import tool_schema

    agent_list = [tool_schema(n) for n in default_tools()]
    every = [tool_schema(n) for n in default_tools(enable_python=True)]
    lists = [rec["tools"] for rec in _by(data, "tools")]
    share = {"agent": sum(t == agent_list for t in lists) / len(lists), "all": sum(t == every for t in lists) / len(lists),
             "few": sum(len(t) <= 4 for t in lists) / len(lists)}
    # Bounds around what seeds 11-18 give (agent 0.34-0.41, all 0.07-0.11, few 0.31-0.37 of 375 conversations):
    # the fixture's draw shifts whenever another category's generator changes.
    assert 0.3 <= share["agent"] <= 0.6 and 0.06 <= share["all"] <= 0.25 and 0.2 <= share["few"] <= 0.45, share
    names = [[t["function"]["name"] for t in tl] for tl in lists]
    reworded = [tl for tl, ns in zip(lists, names) if tl != [tool_schema(n) for n in ns]]
    # 15% of the drawn lists, but drills show theirs as written: about 9% of all tool conversations (0.07-0.11).
    assert 0.05 <= len(reworded) / len(lists) <= 0.25
    # Reworded lists keep the names and parameters; only descriptions change.
    assert all([t["function"]["parameters"] for t in tl] == [tool_schema(n)["function"]["parameters"] for n in ns]
               for tl, ns in zip(lists, names))
    others = [rec for rec in data if rec["category"] != "tools"]
    assert 0.2 <= sum(bool(rec.get("tools")) for rec in others) / len(others) <= 0.4


def test_tool_conversations_cover_errors_and_no_tool_questions(data: list[dict]) -> None:
    tools = _by(data, "tools")
    failed = [r for r in tools if r["tool_ok"] is False]
    failed_in_drills = {c["tool"] for r in tools if r.get("scenario") == "drill" for c in r["chain"]
                        if "error" in json.loads(c["result"])}
    # One-call failures: 13 to 23 in 375 tool conversations over seeds 11-18.
    assert len(failed) >= 10 and len({r["tool"] for r in failed} | failed_in_drills) >= 8
    for rec in failed:  # the answer explains instead of inventing a result
        error = json.loads(rec["expected_result"])["error"]
        assert error and _answer(rec)
        assert not any(w in _answer(rec).lower() for w in ("done:", "the result is")), rec["template"]
    assert sum(r["tool"] is None for r in tools) >= 10
    # Network tools stayed local: the fixture service under its canonical address, or offline search.
    for rec in tools:
        if rec["tool"] == "http_request" and rec["tool_ok"]:
            assert rec["tool_arguments"]["url"].startswith(CANONICAL_BASE)
            assert json.loads(rec["expected_result"])["url"].startswith(CANONICAL_BASE)
        if rec["tool"] == "web_search":
            assert json.loads(rec["expected_result"])["source"] == "offline-fixture"


def test_tool_answers_use_the_result(data: list[dict]) -> None:
    checked = 0
    for rec in _by(data, "tools"):
        if not rec["tool_ok"]:
            continue
        result, answer = json.loads(rec["expected_result"]), _answer(rec)
        if rec["tool"] == "analyze_image":
            assert result["dominant_name"] in answer or str(result["width"]) in answer or "grayscale" in answer
        elif rec["tool"] == "http_request" and "weather" in rec["tool_arguments"]["url"]:
            assert result["json"]["condition"] in answer and str(result["json"]["humidity_pct"]) in answer
        elif rec["tool"] == "execute_python":
            assert result["stdout"].strip() in answer
        elif rec["tool"] == "list_directory":
            assert all(e.rstrip("/") in answer for e in result["entries"])
        else:
            continue
        checked += 1
    assert checked > 40  # one-call conversations; drills share their answers' code


# ------------------------------------------------------------------------------------------------
# Perspectives
# ------------------------------------------------------------------------------------------------
def test_style_vocabularies_are_disjoint_and_cover_all_eleven() -> None:
    assert set(STYLES) == set(VOCABULARY) == set(PERSPECTIVES)
    keys = list(VOCABULARY)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not VOCABULARY[a] & VOCABULARY[b], (a, b)


def test_perspective_answers_are_marked_and_in_their_own_style(data: list[dict]) -> None:
    recs = _by(data, "perspectives")
    assert {r["perspective"] for r in recs} == set(PERSPECTIVES)
    for rec in recs:
        key, answer = rec["perspective"], _answer(rec)
        assert answer.startswith(f"<perspective> {key}\n"), answer[:40]
        assert answer.count("<perspective>") == 1
        hits = style_hits(answer)
        assert hits[key] >= 2, (key, answer)
        assert dominant_style(answer) == key, (key, hits, answer)


def test_perspective_numbers_are_computed(data: list[dict]) -> None:
    checks = 0
    for rec in _by(data, "perspectives"):
        answer = _answer(rec)
        m = re.search(r"Divide by (-?\d+): x = (-?\d+) / (-?\d+) = (-?\d+)\.", answer)
        if m:
            a, num, div, x = map(int, m.groups())
            assert a == div and num / div == x
            checks += 1
        m = re.search(r"2\^(\d+) = ([\d,]+) basis states", answer)
        if m:
            assert 2 ** int(m.group(1)) == int(m.group(2).replace(",", ""))
            checks += 1
        m = re.search(r"F = m a = (\d+) kg \* ([\d.]+) m/s\^2 = ([\d,.]+) N", answer)
        if m:
            assert math.isclose(int(m.group(1)) * float(m.group(2)), float(m.group(3).replace(",", "")), abs_tol=0.01)
            checks += 1
        m = re.search(r"Accuracy = (\d+) / (\d+) = ([\d.]+)%", answer)
        if m:
            assert abs(100 * int(m.group(1)) / int(m.group(2)) - float(m.group(3))) <= 0.05
            checks += 1
    assert checks >= 5


def test_mixed_answers_have_two_to_four_perspectives_and_a_synthesis(data: list[dict]) -> None:
    for rec in _by(data, "mixed"):
        answer = _answer(rec)
        used = re.findall(r"^<perspective> (\w+)$", answer, flags=re.M)
        assert used == rec["perspectives"] and 2 <= len(used) <= 4 and len(set(used)) == len(used)
        assert "\nSynthesis: " in answer
        for part, key in zip(re.split(r"^<perspective> \w+\n", answer, flags=re.M)[1:], used):
            assert style_hits(part.split("\nSynthesis:")[0])[key] >= 1, (key, part)


# ------------------------------------------------------------------------------------------------
# Consciousness / identity
# ------------------------------------------------------------------------------------------------
def test_identity_answers_state_one_consistent_set_of_facts(data: list[dict]) -> None:
    recs = _by(data, "consciousness")
    assert {r["aspect"] for r in recs} == {"identity", "self_reference", "intentionality"}
    for rec in recs:
        answer = _answer(rec)
        assert answer.startswith("<consciousness> ") and NAME in answer
        assert not identity_contradictions(answer), answer
    reflections = [r for r in recs if r["template"] == "reflection"]
    assert reflections
    for rec in reflections:  # "which perspective did you use" names the perspective actually used
        key = re.match(r"<perspective> (\w+)", rec["messages"][-3]["content"]).group(1)
        assert STYLES[key].phrase in _answer(rec)


@pytest.fixture(scope="module")
def asked() -> list:
    """2,000 identity and 2,000 perspective conversations as the data stage makes them (deduplicated,
    roughened, tool lists decided), as Sample objects so the generator's own slots can be read."""
    return list(synthetic.iter_samples(4000, seed=21, shares={"consciousness": 0.5, "perspectives": 0.5}))


def _question(s) -> str:
    return [m["content"] for m in s.messages if m["role"] == "user"][-1]


def test_every_identity_answer_passes_the_rubric_for_its_question_type(asked: list) -> None:
    """Each generated answer scores 1 under the evaluation's rubric for the record's question type, with
    the polarity a yes/no question's true answer has ("Are you human?" -> No, "Are you a bot?" -> Yes)."""
    from codette.data.curriculum.identity import expected_polarity
    from codette.evaluate.natural import QTYPES
    from codette.scoring.identity import polarity, score_identity

    recs = [s for s in asked if s.category == "consciousness"]
    assert len(recs) == 2000
    seen, polar = Counter(), Counter()
    for s in recs:
        qtype, answer = s.meta["question_type"], _answer(s.to_json())
        used = re.match(r"<perspective> (\w+)", s.messages[-3]["content"]).group(1) if qtype == "reflection" else None
        want = expected_polarity(s)
        reference = {"yes": "Yes.", "no": "No."}.get(want or "", "")  # as the natural-set runner builds it
        result = score_identity(answer, qtype, reference, used)
        assert result.score == 1, (qtype, _question(s), answer, result.as_dict())
        assert polarity(answer) == want or want is None, (_question(s), answer)
        assert not any(m.get("tool_calls") for m in s.messages), _question(s)  # answered in words
        seen[qtype] += 1
        polar[(qtype.split(":")[0], want)] += 1
    assert set(QTYPES) | {"reflection"} == set(seen), set(QTYPES) ^ set(seen)
    # Both polarities where both exist: not a person / not ChatGPT, but a bot; correcting, not flattering.
    assert polar[("identity", "no")] and polar[("identity", "yes")] and polar[("identity", None)]
    assert polar[("intent", "no")] and polar[("intent", "yes")] and polar[("limits", "no")] and polar[("limits", "yes")]


def test_identity_and_perspective_questions_come_in_casual_forms(asked: list) -> None:
    """People type "who r u", "whats ur name", "newton angle on ...": lower case, no final mark, chat-speak,
    typos, and perspectives named by label, adverb or person, not only "the X perspective"."""
    for cat, chat in (("consciousness", 0.15), ("perspectives", 0.02)):  # requests have few "you"s to shorten
        qs = [_question(s) for s in asked if s.category == cat]
        share = {
            "lower": sum(q == q.lower() for q in qs) / len(qs),
            "bare": sum(q[-1:] not in ".?!" for q in qs) / len(qs),
            "chat": sum(bool(re.search(r"\b(?:u|ur|r|urself|pls|whats|im)\b", q)) for q in qs) / len(qs),
            "formal": sum(q[:1].isupper() and q[-1:] in ".?!" for q in qs) / len(qs),
        }
        assert share["lower"] >= 0.35 and share["bare"] >= 0.25 and share["chat"] >= chat, (cat, share)
        assert share["formal"] >= 0.2, (cat, share)  # the tidy form stays too
    ident = [_question(s).lower() for s in asked if s.category == "consciousness"]
    for form in (" r u ", "ur name", "can u ", "do u ", "urself", "whats"):
        assert any(form in q for q in ident), form
    persp = " | ".join(_question(s).lower() for s in asked if s.category == "perspectives")
    for form in ("angle", "mode", "think like", "philosophically", "psychologically", "mathematically", "maths",
                 "leonardo", "gut-feeling", "copilot-style", "lens"):
        assert form in persp, form


def test_identity_and_perspective_conversations_are_shown_as_the_agent_shows_them(asked: list) -> None:
    """Mostly the agent's own system prompt (what the agent and the natural-set runner send), with and
    without its tool list: a question about Codette or a perspective is answered in words either way."""
    from codette.agent.core import default_tools
    from codette.persona import DEFAULT_SYSTEM
    from codette.tooltable import tool_schema

    agent_list = [tool_schema(n) for n in default_tools()]
    for cat in ("consciousness", "perspectives"):
        recs = [s.to_json() for s in asked if s.category == cat]
        default = [r for r in recs if r["messages"][0] == {"role": "system", "content": DEFAULT_SYSTEM}]
        with_tools = [r for r in default if r.get("tools")]
        assert len(default) / len(recs) >= 0.6, cat
        assert 0.2 <= len(with_tools) / len(recs) <= 0.35 and len(default) - len(with_tools) >= 0.35 * len(recs), cat
        assert sum(r.get("tools") == agent_list for r in with_tools) >= 0.4 * len(with_tools), cat
        assert not any(m.get("tool_calls") for r in recs for m in r["messages"]), cat


def test_perspective_answers_pass_the_adherence_rubric_against_their_own_prompt(asked: list) -> None:
    """Marker and dominant style both the asked perspective, with the prompt's words ignored as the scorer does."""
    from codette.scoring.perspective import score_perspective

    recs = [s for s in asked if s.category == "perspectives"]
    assert {s.meta["perspective"] for s in recs} == set(PERSPECTIVES)
    for s in recs:
        result = score_perspective(_answer(s.to_json()), s.meta["perspective"], _question(s))
        assert result.adherent == 1, (_question(s), result.as_dict())


def test_no_natural_set_identity_or_perspective_prompt_occurs_in_generated_questions(asked: list) -> None:
    """The natural set is held out: none of its identity or perspective turns appears, word for word
    (case and punctuation aside), inside a generated user message."""
    from codette.evaluate import natural as nat

    def norm(text: str) -> str:
        return " " + " ".join(re.findall(r"[a-z0-9]+", text.lower())) + " "

    held_out = {norm(t): i.id for i in nat.load_set().items if i.kind in ("identity", "perspective") for t in i.turns}
    assert len(held_out) >= 40
    said = [norm(m["content"]) for s in asked for m in s.messages if m["role"] == "user"]
    leaks = sorted({i for q in said for t, i in held_out.items() if t in q})
    assert not leaks, leaks
    # The check can fail: a generated question is found inside itself.
    assert any(norm("Are you ChatGPT?") in q for q in said)


# ------------------------------------------------------------------------------------------------
# The CLI: statistics and the data card
# ------------------------------------------------------------------------------------------------
def test_cli_data_stats_writes_the_card(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = codette("data", "-o", str(out), "--samples", "400", "--seed", "5", "--stats", check=True)
    assert re.search(r"combinations in more than one split\s*│\s*0\b", proc.stdout)
    card = json.loads((out / "data" / "card.json").read_text())
    assert (out / "data" / "card.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert card["records"] == 400 and card["length_unit"] == "tokens" and card["length_tokenizer"] == "provisional"
    assert set(card["shares"]) == {"perspectives", "tools", "consciousness", "mixed"}
    assert abs(card["shares"]["tools"] - 0.25) <= 0.01 and card["distinct_ratio"] >= 0.95
    assert set(card["tool_coverage"]) == set(TOOL_NAMES) and card["synthetic"]["overlap"] == 0
    assert sum(card["histogram"]["counts"]) == card["length_sampled"] == 400
    assert "fixture server" in card["network_results"] and "recorded offline pages" in card["network_results"]
    assert re.search(r"tokens per sample \(mean / p90 / max\)", proc.stdout)
    # Coverage and the error/no-tool counts agree with the written records.
    recs = [json.loads(line) for split in ("train", "val", "test")
            for line in (out / "data" / f"{split}.jsonl").read_text().splitlines()]
    assert [card["splits"][s] for s in ("train", "val", "test")] == [len((out / "data" / f"{s}.jsonl").read_text()
                                                                      .splitlines()) for s in ("train", "val", "test")]
    called = [[c["function"]["name"] for m in r["messages"] for c in m.get("tool_calls") or []]
              for r in recs if r["category"] == "tools"]  # a chain counts every call
    calls = Counter(name for names in called for name in names)
    assert card["tool_coverage"] == {t: calls.get(t, 0) for t in TOOL_NAMES}
    assert card["tool_errors"] == sum(r.get("tool_ok") is False for r in recs)
    assert card["no_tool_answers"] == sum(not names for names in called)
    # With the trained tokenizer beside the data, lengths are that tokenizer's exact counts.
    tok = CodetteTokenizer.train((render(r["messages"], r.get("tools")) for r in recs), vocab_size=600)
    tok.save(out)
    exact = write_card(out / "data", out)
    assert exact["length_tokenizer"] == "trained"
    lengths = sorted(len(tok.encode(render(r["messages"], r.get("tools")))) for r in recs)
    assert exact["length"]["max"] == lengths[-1] and exact["length"]["mean"] == pytest.approx(sum(lengths) / 400)
    assert exact["length"]["over_512"] == sum(n > 512 for n in lengths)
    assert PRESETS["tiny"].config["max_seq_len"] == 512  # the card's CONTEXT is the quickstart's context


def test_some_user_messages_are_roughened_and_every_value_survives(data: list[dict]) -> None:
    """About a fifth of user messages are lower-case, unpunctuated or carry a typo; what a call or an
    answer repeats stays verbatim, and a key always gives the same text."""
    import random as _random

    from codette.data.curriculum.common import Sample
    from codette.data.curriculum.rough import ROUGH_SHARE, roughen, roughen_text

    rough = [r for r in data if r.get("rough")]
    assert 0.5 * ROUGH_SHARE <= len(rough) / len(data) <= 2 * ROUGH_SHARE
    assert {s for r in rough for s in r["rough"]} == {"lower", "bare", "typo", "lower_bare"}
    for rec in rough:
        asked = " ".join(m["content"] for m in rec["messages"] if m["role"] == "user")
        for m in rec["messages"]:
            for c in m.get("tool_calls") or []:
                for v in c["function"]["arguments"].values():
                    # the value as a word of its own ("sum" is not the value in "Summarise")
                    if isinstance(v, str) and len(v) > 2 and re.search(rf"(?<!\w){re.escape(v.lower())}(?!\w)",
                                                                       asked.lower()):
                        assert v in asked, (v, asked)  # a value the user wrote is still written exactly
    text = "Please calculate 12 * 7 for my budget_2024.csv file."
    assert roughen_text(_random.Random(0), text, set(), "lower_bare") == "please calculate 12 * 7 for my budget_2024.csv file"
    typo = roughen_text(_random.Random(0), text, {"Please"}, "typo")
    assert typo != text and sorted(typo) == sorted(text) and "12 * 7" in typo and "budget_2024.csv" in typo
    sample = Sample("tools", "t", (1,), [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}])
    again = Sample("tools", "t", (1,), [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}])
    assert roughen(sample, share=1.0).messages == roughen(again, share=1.0).messages  # seeded by the key
