"""Data: synthetic conversations, the user's own files, packing into memmaps and deterministic batches."""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from codette.config import DataConfig
from codette.data import synthetic
from codette.data.build import build_dataset, read_split
from codette.data.split import SPLITS, split_of
from codette.data.loader import IGNORE_INDEX, BatchSampler
from codette.data.pack import PackedSplit, encode_document, pack, token_dtype
from codette.data.sources import Document, iter_documents
from codette.errors import CodetteError
from codette.tokenizer import CodetteTokenizer
from codette.tokenizer.chat_template import ROLES, validate_messages
from codette.tooltable import TOOL_NAMES


def _dump(samples: list) -> str:
    return json.dumps([s.to_json() for s in samples], ensure_ascii=False, sort_keys=True)


def _dialogue(sample) -> str:
    """The user and assistant turns (content and tool calls): what a leak into training would repeat."""
    return json.dumps([{k: m.get(k) for k in ("role", "content", "tool_calls")}
                       for m in sample.messages if m["role"] in ("user", "assistant")],
                      ensure_ascii=False, sort_keys=True)


@pytest.fixture(scope="module")
def big() -> tuple[list, list, synthetic.DatasetStats]:
    """5000 conversations (seed 0): the statistics and invariants are checked on this one set."""
    return synthetic.generate(5000, seed=0)


# ------------------------------------------------------------------------------------------------
# Synthetic conversations
# ------------------------------------------------------------------------------------------------
def test_generate_is_deterministic_by_seed() -> None:
    a = synthetic.generate(300, seed=1)
    b = synthetic.generate(300, seed=1)
    c = synthetic.generate(300, seed=2)
    assert _dump(a[0]) == _dump(b[0]) and _dump(a[1]) == _dump(b[1])
    assert a[2] == b[2]
    assert _dump(a[0] + a[1]) != _dump(c[0] + c[1])


def test_build_dataset_is_deterministic_by_seed(tmp_path: Path) -> None:
    """What `codette data` writes (tool runs included) is byte-identical for one seed, different for another."""
    def files(seed: int, name: str) -> dict[str, bytes]:
        build_dataset(DataConfig(samples=300, seed=seed), tmp_path / name)
        return {f: (tmp_path / name / f).read_bytes() for f in ("train.jsonl", "val.jsonl", "test.jsonl", "stats.json")}

    a, b, c = files(7, "a"), files(7, "b"), files(8, "c")
    assert a == b
    assert a["train.jsonl"] != c["train.jsonl"]


def test_data_tool_mix_sets_the_mixture_of_tool_conversations(tmp_path: Path) -> None:
    """`data.tool_mix` written out with today's values gives the same bytes as no setting; other values
    change what the tool conversations are (here: only no-tool questions, always under all eleven tools)."""
    from codette.config import ToolMixConfig, build_config

    def files(cfg: DataConfig, name: str) -> dict[str, bytes]:
        build_dataset(cfg, tmp_path / name)
        return {f: (tmp_path / name / f).read_bytes() for f in ("train.jsonl", "val.jsonl", "test.jsonl")}

    explicit = build_config(None, {"data.samples": 200, "data.seed": 4,
                                   **{f"data.tool_mix.{k}": str(v) for k, v in vars(ToolMixConfig()).items()}})
    assert files(DataConfig(samples=200, seed=4), "a") == files(explicit.data, "b")
    only = ToolMixConfig(no_tool=1.0, chain=0.0, drill=0.0, default_list=0.0, all_list=1.0, few_list=0.0, reworded=0.0)
    train, val, _ = synthetic.generate(200, seed=4, tool_mix=only)
    tools = [s for s in train + val if s.category == "tools"]
    assert tools and all(s.meta["tool"] is None and not s.meta.get("chain") for s in tools)
    assert all([t["function"]["name"] for t in s.tools] == list(TOOL_NAMES) for s in tools)


def test_all_eleven_perspectives_and_tools_are_covered(big) -> None:
    train, val, stats = big
    samples = train + val
    assert {s.meta["perspective"] for s in samples if s.category == "perspectives"} == set(synthetic.PERSPECTIVES)
    assert {p for s in samples if s.category == "mixed" for p in s.meta["perspectives"]} == set(synthetic.PERSPECTIVES)
    called = {s.meta["tool"] for s in samples if s.category == "tools"}
    assert called == set(TOOL_NAMES) | {None}
    assert set(stats.tool_calls) == set(TOOL_NAMES) | {"none", "chain"} and min(stats.tool_calls.values()) >= 40
    calls = Counter(c["function"]["name"] for s in samples if s.category == "tools" for m in s.messages
                    for c in m.get("tool_calls") or [])  # chains and drills count every call
    assert min(calls[t] for t in TOOL_NAMES) >= 40, calls
    assert {s.meta["aspect"] for s in samples if s.category == "consciousness"} == {
        "identity", "self_reference", "intentionality"}


def test_category_shares_at_n_2000() -> None:
    train, val, stats = synthetic.generate(2000, seed=3)
    samples = train + val
    assert len(samples) == stats.distinct == 2000
    for cat, share in {"perspectives": 0.30, "tools": 0.25, "consciousness": 0.25, "mixed": 0.20}.items():
        actual = sum(s.category == cat for s in samples) / len(samples)
        assert abs(actual - share) <= 0.01, (cat, actual)
        assert abs(stats.shares[cat] - actual) < 1e-12


def test_distinct_ratio_at_n_5000(big) -> None:
    train, val, stats = big
    samples = train + val
    assert len(samples) == 5000
    assert len({s.key for s in samples}) == 5000
    assert stats.distinct_ratio >= 0.95
    # Measured independently of the stats: distinct dialogues (system prompt left out).
    distinct = len({json.dumps([m for m in s.messages if m["role"] != "system"], sort_keys=True) for s in samples})
    assert distinct / len(samples) >= 0.95


def test_val_keys_are_not_in_train(big) -> None:
    train, val, stats = big
    assert 0.05 < len(val) / (len(train) + len(val)) < 0.15
    train_keys = {s.key for s in train}
    assert not [s.key for s in val if s.key in train_keys]
    assert stats.overlap == 0


def test_three_splits_are_disjoint_by_key_and_stable() -> None:
    """train / val / test by a hash of the sample key: each key in exactly one split, the same split every run."""
    shares = synthetic.CATEGORY_SHARES
    collector = synthetic.StatsCollector(3000, shares, val_fraction=0.1, test_fraction=0.1)
    keys: dict[str, set[str]] = {name: set() for name in SPLITS}
    for s in synthetic.iter_samples(3000, seed=5, shares=shares, collector=collector):
        split = collector.add(s)
        keys[split].add(s.key)
        assert split_of(s.key, 0.1, 0.1) == split
    assert not (keys["train"] & keys["val"]) and not (keys["train"] & keys["test"]) and not (keys["val"] & keys["test"])
    for name, share in (("val", 0.1), ("test", 0.1), ("train", 0.8)):
        assert abs(len(keys[name]) / 3000 - share) < 0.03, (name, len(keys[name]))
    stats = collector.stats()
    assert (stats.train, stats.val, stats.test, stats.overlap) == (len(keys["train"]), len(keys["val"]),
                                                                   len(keys["test"]), 0)
    # val keeps its hash buckets whatever the test fraction; test takes the next ones from train
    assert all(split_of(k, 0.1, 0.0) == "val" for k in keys["val"])
    assert all(split_of(k, 0.1, 0.0) == "train" for k in keys["test"])


def test_written_splits_share_no_dialogue(tmp_path: Path) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    for i in range(60):
        (notes / f"{i}.txt").write_text(f"note number {i}: rotary embeddings rotate pairs of features.\n")
    stats = build_dataset(DataConfig(samples=600, seed=2, sources=[str(notes)]), tmp_path / "data")
    said = {name: [_said(r) for r in _records(tmp_path / "data", name)] for name in SPLITS}
    assert [len(said[n]) for n in SPLITS] == [stats.train, stats.val, stats.test] and min(map(len, said.values())) > 0
    assert sum(len(v) for v in said.values()) == 660
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not set(said[a]) & set(said[b]), (a, b)


@pytest.mark.parametrize(("val", "test", "message"), [
    (0.1, 0.0, "config key 'data.test_fraction': expected a number in (0, 1), got 0.0"),
    (0.0, 0.1, "config key 'data.val_fraction': expected a number in (0, 1), got 0.0"),
    (0.5, 0.5, "config keys 'data.val_fraction' + 'data.test_fraction' sum to 1; they must leave a share"),
])
def test_split_fractions_are_checked(val: float, test: float, message: str) -> None:
    with pytest.raises(CodetteError) as exc:
        DataConfig(samples=50, val_fraction=val, test_fraction=test)
    assert message in str(exc.value)


def test_val_dialogue_text_is_not_in_train(big) -> None:
    train, val, _ = big
    train_texts = {_dialogue(s) for s in train}
    leaked = [(s.category, s.template, s.key) for s in val if _dialogue(s) in train_texts]
    assert not leaked, f"{len(leaked)} validation dialogues also occur in train, e.g. {leaked[:3]}"


def test_every_sample_is_a_valid_conversation(big) -> None:
    train, val, _ = big
    for s in train + val:
        msgs = s.messages
        validate_messages(msgs, s.key)
        roles = [m["role"] for m in msgs]
        assert set(roles) <= set(ROLES)
        assert "assistant" in roles
        assert roles[-1] == "assistant", s.key
        assert "system" not in roles[1:], s.key
        for i, m in enumerate(msgs):
            if m["role"] == "tool":  # answers a tool call
                assert msgs[i - 1]["role"] == "tool" or msgs[i - 1].get("tool_calls"), s.key


def test_newton_fall_numbers_are_computed(big) -> None:
    train, val, _ = big
    checked = 0
    for s in train + val:
        question = next(m["content"] for m in s.messages if m["role"] == "user")
        q = re.search(r"dropped from (\d+(?:\.\d+)?) m\b", question)
        if not q:
            continue
        h = float(q.group(1))
        answer = s.messages[-1]["content"]
        a = re.search(r"t = sqrt\(2 \* (\d+(?:\.\d+)?) / 9\.81\) = (\d+(?:\.\d+)?) s", answer)
        assert a, answer
        assert float(a.group(1)) == h
        t = math.sqrt(2 * h / 9.81)
        assert abs(float(a.group(2)) - t) <= 0.005 + 1e-9, (h, answer)
        v = re.search(r"v = g t = ([\d,]+(?:\.\d+)?) m/s", answer)
        assert v, answer
        assert abs(float(v.group(1).replace(",", "")) - 9.81 * t) <= 0.005 + 1e-9, (h, answer)
        checked += 1
    assert checked >= 3


def _num(text: str) -> float:
    return float(text.replace(",", ""))


def _close(stated: str, exact: float) -> bool:
    """A number the generator printed (2 decimals at most, maybe with thousands separators) vs the exact value."""
    return abs(_num(stated) - exact) <= 0.005 + 1e-9 * abs(exact)


_N = r"(-?[\d,]+(?:\.\d+)?)"


def _check_numbers(name: str, q: str, a: str) -> None:
    """Recompute every number of one worked answer from the numbers in its question (raises AssertionError)."""
    def m(pattern: str, text: str) -> tuple[str, ...]:
        found = re.search(pattern.replace("{N}", _N), text, flags=re.IGNORECASE)
        assert found, (name, pattern, text)
        return found.groups()

    if name == "_newton_fall":
        (h,) = m(r"dropped from {N} m", q)
        t = math.sqrt(2 * _num(h) / 9.81)
        h2, ts, vs = m(r"t = sqrt\(2 \* {N} / 9\.81\) = {N} s, and it lands at v = g t = {N} m/s", a)
        assert h2 == h and _close(ts, t) and _close(vs, 9.81 * t)
    elif name == "_newton_force":
        mass, acc = m(r"a {N} kg \w+ at {N} m/s\^2", q)
        mass2, acc2, f = m(r"F = m a = {N} kg \* {N} m/s\^2 = {N} N", a)
        assert (mass2, acc2) == (mass, acc) and _close(f, _num(mass) * _num(acc))
    elif name == "_newton_energy":
        mass, v = m(r"a {N} kg \w+ moving at {N} m/s", q)
        e = m(r"E = m v\^2 / 2 = \S+ \* \S+\^2 / 2 = {N} J", a)[0]
        assert _close(e, _num(mass) * _num(v) ** 2 / 2)
    elif name == "_newton_momentum":
        mass, kmh = m(r"a {N} kg \w+ at {N} km/h", q)
        v, p = m(r"= {N} m/s\. Momentum is p = m v = \S+ \* \S+ = {N} kg m/s", a)
        assert _close(v, _num(kmh) / 3.6) and _close(p, _num(mass) * _num(kmh) / 3.6)
    elif name == "_davinci_golden":
        (w,) = m(r"{N} cm wide", q)
        assert _close(m(r"height = \S+ \* 1\.618 = {N} cm", a)[0], _num(w) * (1 + math.sqrt(5)) / 2)
    elif name == "_davinci_scale":
        k, length = m(r"1:{N} model of a {N} m", q)
        assert _close(m(r"= {N} cm", a)[0], _num(length) / _num(k) * 100)
    elif name == "_quantum_qubits":
        (n,) = m(r"{N} qubits", q)
        assert _num(m(r"2\^\d+ = {N} basis states", a)[0]) == 2 ** int(n)
    elif name == "_quantum_amplitude":
        (amp,) = m(r"amplitude {N} for state 0", q)
        p0, p0b, p1 = m(r"P\(0\) = \S+\^2 = {N}%, so P\(1\) = 100% - {N}% = {N}%", a)
        assert _close(p0, 100 * _num(amp) ** 2) and p0b == p0 and _close(p1, 100 - 100 * _num(amp) ** 2)
    elif name == "_quantum_coins":
        (k,) = m(r"{N} fair coin", q)
        den, p = m(r"P = 0\.5\^\d+ = 1/{N} = {N}%", a)
        assert _num(den) == 2 ** int(k) and _close(p, 100 * 0.5 ** int(k))
    elif name == "_neural_accuracy":
        c, t = m(r"got {N} of {N} test", q)
        assert abs(_num(m(r"Accuracy = \d+ / \d+ = {N}%", a)[0]) - 100 * _num(c) / _num(t)) <= 0.05 + 1e-9
    elif name == "_neural_params":
        n_in, n_out = m(r"with {N} inputs and {N} outputs", q)
        assert _num(m(r"= {N} parameters", a)[0]) == _num(n_in) * _num(n_out) + _num(n_out)
    elif name == "_bias_share":
        n, g, pop = m(r"survey of {N} people included {N} .*, who are {N}% of", q)
        share = 100 * _num(g) / _num(n)
        s1, s2, verdict, gap = m(r"= {N}% of the sample against {N}% of the population, so they are "
                                 r"([\w -]+?) \(a gap of {N} points\)", a)
        assert _close(s1, share) and s2 == pop and _close(gap, abs(share - _num(pop)))
        assert verdict == ("under-represented" if share < _num(pop) - 2 else "over-represented"
                           if share > _num(pop) + 2 else "represented about fairly")
    elif name == "_psych_habit":
        mins, days = m(r"is {N} minutes of .* a day for {N} days", q)
        total, hours = m(r"= {N} minutes, about {N} hours", a)
        assert _num(total) == _num(mins) * _num(days) and _close(hours, _num(total) / 60)
    elif name == "_copilot_schedule":
        (start,) = m(r"I start at {N}:00", q)
        mins = [int(x) for x in re.findall(r"\((\d+) min\)", a)]
        total, hh, mm = m(r"= {N} minutes, so you finish at (\d+):(\d\d)", a)
        assert len(mins) >= 2 and _num(total) == sum(mins)
        assert divmod(int(start) * 60 + sum(mins), 60) == (int(hh), int(mm))
    elif name == "_math_linear":
        a_, sign, b, c = m(r"solve (-?\d+)x ([+-]) (\d+) = (-?\d+)\.", q)
        x = int(m(r"x = -?\d+ / -?\d+ = (-?\d+)\. Check", a)[0])
        assert int(a_) * x + (int(b) if sign == "+" else -int(b)) == int(c)
    elif name == "_math_circle":
        (r,) = m(r"radius {N} cm", q)
        area, circ = m(r"Area = pi r\^2 = 3\.1416 \* \d+ = {N} cm\^2, and circumference = 2 pi r = {N} cm", a)
        assert _close(area, math.pi * _num(r) ** 2) and _close(circ, 2 * math.pi * _num(r))
    elif name == "_math_convert":
        if "miles" in q:
            (v,) = m(r"is {N} km", q)
            assert _close(m(r"= {N} miles", a)[0], _num(v) * 0.621371)
        elif "pounds" in q:
            (v,) = m(r"is {N} kg", q)
            assert _close(m(r"= {N} lb", a)[0], _num(v) * 2.20462)
        else:
            (v,) = m(r"[Ww]hat is {N} degrees Celsius", q)
            assert _close(m(r"= {N} degrees Fahrenheit", a)[0], _num(v) * 9 / 5 + 32)
    elif name == "_math_percent":
        price, off = m(r"a {N} euro item cost after a {N}% discount", q)
        cut, final = m(r"= {N} euro, therefore the price is \S+ - \S+ = {N} euro", a)
        assert _close(cut, _num(price) * _num(off) / 100) and _close(final, _num(price) * (1 - _num(off) / 100))
    elif name == "_symbolic_truth":
        (n,) = m(r"for {N} proposition", q)
        assert _num(m(r"2\^\d+ = {N} rows", a)[0]) == 2 ** int(n)
    elif name == "_symbolic_syllogism":
        first, _second, middle = m(r"\b[Aa]ll (.+?) are (.+?), and .+? is one of the (.+?)\. Is ", q)
        valid = middle == first  # all A are B, x is A => x is B; all A are B, x is B => nothing follows
        assert ("the conclusion follows" in a) == valid and ("does not follow" in a) == (not valid)
    else:
        raise AssertionError(f"no recomputation check for the numeric generator {name}; add one")


def test_every_numeric_generator_computes_its_numbers() -> None:
    """Each perspective's worked problems, 150 draws per generator, recomputed from the question."""
    from codette.data.curriculum.perspectives import NUMERIC

    gens = [g for fs in NUMERIC.values() for g in fs]
    assert len(gens) >= 20
    for g in gens:
        rng = random.Random(g.__name__)
        for _ in range(150):
            q, a, _slots = g(rng)
            _check_numbers(g.__name__, q, a)


def test_number_checks_catch_a_wrong_number() -> None:
    """The checker above is not vacuous: a worked answer with one digit changed fails it."""
    from codette.data.curriculum.perspectives import _math_circle, _newton_fall

    for g in (_newton_fall, _math_circle):
        q, a, _ = g(random.Random(1))
        bad = re.sub(r"= (\d+)(\.\d+ (?:s|cm\^2)\b)", lambda mo: f"= {int(mo.group(1)) + 1}{mo.group(2)}", a, count=1)
        assert bad != a
        with pytest.raises(AssertionError):
            _check_numbers(g.__name__, q, bad)


def test_perspective_samples_carry_checked_numbers(big) -> None:
    """In the generated set itself, the worked answers of the numeric templates pass the same checks."""
    train, val, _ = big
    checked = set()
    for s in train + val:
        if s.category != "perspectives" or not s.template.startswith("num-"):
            continue
        if s.meta.get("rough"):  # the checks parse the tidy question; a roughened one keeps its numbers
            continue
        name = "_" + s.template.split("-_", 1)[1].rsplit("-", 1)[0]  # num-<key>-<generator>-<prefix>
        question = next(m["content"] for m in s.messages if m["role"] == "user")
        _check_numbers(name, question, s.messages[-1]["content"])
        checked.add(name)
    assert len(checked) >= 18, sorted(checked)


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _evaluate(expr: str) -> float:
    assert re.fullmatch(r"[\d\s+\-*/%().a-z]+", expr), expr
    return eval(expr, {"__builtins__": {}}, {"sqrt": math.sqrt, "log": math.log})  # noqa: S307 - checked above


def test_calculator_answers_equal_recomputed_arithmetic(big) -> None:
    train, val, _ = big
    checked = failures = 0
    for s in train + val:
        msgs = s.messages
        for i, m in enumerate(msgs):
            calls = [c.get("function", c) for c in m.get("tool_calls") or []]
            if len(calls) != 1 or calls[0]["name"] != "calculator":
                continue
            args = calls[0]["arguments"]
            expr = (json.loads(args) if isinstance(args, str) else args)["expression"]
            result = json.loads(msgs[i + 1]["content"])
            answer = next(x["content"] for x in msgs[i + 2:] if x["role"] == "assistant")
            try:
                expected = _evaluate(expr)
            except (ZeroDivisionError, ValueError):  # the tool must refuse, and the answer must say so
                assert "error" in result and "result" not in result, (expr, result)
                assert "could not" in answer.lower() or "cannot" in answer.lower(), answer
                failures += 1
                continue
            assert math.isclose(result["result"], expected, rel_tol=1e-9, abs_tol=1e-6), (expr, result)
            stated = float(_NUMBER.findall(answer)[-1].replace(",", ""))
            assert abs(stated - expected) <= 0.005 + 1e-9 * abs(expected), (expr, answer)
            checked += 1
    assert checked >= 20


# ------------------------------------------------------------------------------------------------
# build_dataset
# ------------------------------------------------------------------------------------------------
def _said(record: dict) -> str:
    """A written record's text, chats without the system prompt (decoration, not content)."""
    if "messages" not in record:
        return record["text"]
    return json.dumps([{k: m.get(k) for k in ("role", "content", "tool_calls")} for m in record["messages"]
                       if m["role"] in ("user", "assistant")], ensure_ascii=False, sort_keys=True)


def _records(data_dir: Path, split: str) -> list[dict]:
    return [json.loads(line) for line in (data_dir / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def test_build_dataset_writes_splits_and_stats(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("My own notes about rotary embeddings.\n", encoding="utf-8")
    out = tmp_path / "data"
    stats = build_dataset(DataConfig(samples=200, seed=0, val_fraction=0.1, sources=[str(notes)]), out)
    assert sorted(p.name for p in out.iterdir()) == ["stats.json", "test.jsonl", "train.jsonl", "val.jsonl"]
    assert _leftovers(out) == []
    lines = {n: (out / f"{n}.jsonl").read_text(encoding="utf-8").splitlines() for n in SPLITS}
    assert [len(lines[n]) for n in SPLITS] == [stats.train, stats.val, stats.test]
    assert stats.train + stats.val + stats.test == 201 and stats.user_documents == 1 and stats.val > 0 < stats.test
    recs = [json.loads(line) for n in SPLITS for line in lines[n]]
    assert sum("messages" in r for r in recs) == 200
    assert [r["text"] for r in recs if "text" in r] == ["My own notes about rotary embeddings.\n"]
    assert json.loads((out / "stats.json").read_text()) == stats.as_dict()
    assert [len(list(read_split(out, n))) for n in SPLITS] == [stats.train, stats.val, stats.test]


def test_build_dataset_is_atomic_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "corpus"
    src.mkdir()
    for name in "abc":
        (src / f"{name}.txt").write_text(f"first corpus, part {name}\n")
    out = tmp_path / "data"
    build_dataset(DataConfig(synthetic=False, sources=[str(src)]), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (src / "a.txt").write_text("second corpus\n")

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_dataset(DataConfig(synthetic=False, sources=[str(src)]), out)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # old files intact, no temp files


def test_build_dataset_names_a_bad_source(tmp_path: Path) -> None:
    bad = tmp_path / "chat.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    out = tmp_path / "data"
    with pytest.raises(CodetteError) as exc:
        build_dataset(DataConfig(synthetic=False, sources=[str(bad)]), out)
    assert f"{bad}:1" in str(exc.value)
    assert not out.exists() or not list(out.glob("*.jsonl"))


def test_build_dataset_round_trips_unusual_text(tmp_path: Path) -> None:
    text = "line one\u2028line two\x85three\r\nfour\x0bfive \U0001F600\n"
    src = tmp_path / "odd.txt"
    src.write_bytes(text.encode("utf-8"))
    build_dataset(DataConfig(samples=20, sources=[str(src)]), tmp_path / "data")
    docs = [d for split in SPLITS for d in read_split(tmp_path / "data", split)]
    assert len(docs) == 21
    assert [d.text for d in docs if d.text is not None] == [text]


@pytest.mark.parametrize("n", [1, 2])
def test_a_corpus_too_small_for_three_splits_is_refused(tmp_path: Path, n: int) -> None:
    out = tmp_path / "data"
    sources = []
    for i in range(n):
        sources.append(str(tmp_path / f"doc{i}.txt"))
        Path(sources[-1]).write_text(f"Document number {i}.\n")
    with pytest.raises(CodetteError) as exc:
        build_dataset(DataConfig(synthetic=False, sources=sources), out)
    assert f"the data has {n} document(s), too few to fill the train, val and test splits" in str(exc.value)
    assert not out.exists() or not list(out.iterdir())  # nothing half-written


def test_a_three_document_corpus_fills_every_split(tmp_path: Path) -> None:
    """Tiny corpora: a held-out split the hash left empty gets one document from train."""
    sources = []
    for i in range(3):
        sources.append(str(tmp_path / f"doc{i}.txt"))
        Path(sources[-1]).write_text(f"Document number {i}.\n")
    out = tmp_path / "data"
    stats = build_dataset(DataConfig(synthetic=False, sources=sources), out)
    assert (stats.train, stats.val, stats.test) == (1, 1, 1)
    texts = sorted(d.text for split in SPLITS for d in read_split(out, split))
    assert texts == [f"Document number {i}.\n" for i in range(3)]


# ------------------------------------------------------------------------------------------------
# The user's own files
# ------------------------------------------------------------------------------------------------
def _error(path: Path, **kw) -> str:
    with pytest.raises(CodetteError) as exc:
        list(iter_documents(path, **kw))
    return str(exc.value)


@pytest.mark.parametrize("name", ["missing.txt", "missing.jsonl", "missing.md"])
def test_missing_file(tmp_path: Path, name: str) -> None:
    msg = _error(tmp_path / name)
    assert str(tmp_path / name) in msg and "not found" in msg


@pytest.mark.parametrize("name", ["empty.txt", "empty.jsonl"])
@pytest.mark.parametrize("content", [b"", b"  \n\n\t\n"])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    msg = _error(tmp_path / name)
    assert str(tmp_path / name) in msg
    assert "empty" in msg or "no conversations" in msg


@pytest.mark.parametrize("name", ["blob.txt", "blob.jsonl"])
def test_binary_file(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")
    msg = _error(tmp_path / name)
    assert str(tmp_path / name) in msg and "binary" in msg


def test_invalid_utf8_text(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("first line\nsecond caf".encode() + b"\xe9\nthird\n")
    msg = _error(path)
    assert f"{path}:2" in msg and "UTF-8" in msg
    docs = list(iter_documents(path, errors="replace"))
    assert "".join(d.text for d in docs) == "first line\nsecond caf\ufffd\nthird\n"


def test_invalid_utf8_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]})
    path.write_bytes(good.encode() + b"\n" + good.replace("hello", "caf\u00e9").encode("latin-1") + b"\n")
    msg = _error(path)
    assert f"{path}:2" in msg and "UTF-8" in msg
    docs = list(iter_documents(path, errors="replace"))
    assert [d.messages[1]["content"] for d in docs] == ["hello", "caf\ufffd"]


def _chat(user: str = "hi", assistant: str = "hello") -> str:
    return json.dumps({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]})


def test_malformed_jsonl_names_line_3(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    path.write_text(_chat() + "\n\n" + '{"messages": [oops\n' + _chat() + "\n")
    msg = _error(path)
    assert f"{path}:3" in msg and "JSON" in msg


def test_conversation_without_assistant_turn(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    no_assistant = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}
    path.write_text(_chat() + "\n" + json.dumps(no_assistant) + "\n")
    msg = _error(path)
    assert f"{path}:2" in msg and "assistant" in msg


def test_unknown_role(tmp_path: Path) -> None:
    path = tmp_path / "chat.jsonl"
    record = {"messages": [{"role": "human", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    path.write_text(_chat() + "\n" + _chat() + "\n" + json.dumps(record) + "\n")
    msg = _error(path)
    assert f"{path}:3" in msg and "'human'" in msg


def test_folder_without_usable_files(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "table.csv").write_text("a,b\n1,2\n")
    (folder / "image.png").write_bytes(b"\x89PNG")
    msg = _error(folder)
    assert str(folder) in msg


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "table.csv"
    path.write_text("a,b\n1,2\n")
    msg = _error(path)
    assert str(path) in msg and ".csv" in msg


def test_plain_text_and_text_folders_are_accepted(tmp_path: Path) -> None:
    one = tmp_path / "one.txt"
    one.write_text("Hello there.\nSecond line.\n", encoding="utf-8")
    docs = list(iter_documents(one))
    assert [d.text for d in docs] == ["Hello there.\nSecond line.\n"]
    assert docs[0].messages is None and str(one) in docs[0].source

    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee\n")
    (folder / "a.txt").write_text("ay\n")
    (folder / "sub" / "c.md").write_text("# see\n")
    (folder / "skip.csv").write_text("x\n")
    (folder / "d.jsonl").write_text(_chat("q", "a") + "\n" + json.dumps({"text": "plain line"}) + "\n")
    docs = list(iter_documents(folder))
    assert [d.text for d in docs if d.text is not None] == ["ay\n", "bee\n", "plain line", "# see\n"]
    assert [d.messages[1]["content"] for d in docs if d.messages] == ["a"]


# ------------------------------------------------------------------------------------------------
# Packing
# ------------------------------------------------------------------------------------------------
CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 3?"},
    {"role": "assistant", "content": "2 + 3 = 5."},
    {"role": "user", "content": "And 2 * 3?"},
    {"role": "assistant", "content": "2 * 3 = 6."},
]


def _runs(ids, mask) -> list[list[int]]:
    runs: list[list[int]] = []
    prev = 0
    for i, m in zip(ids, mask):
        if m and not prev:
            runs.append([])
        if m:
            runs[-1].append(int(i))
        prev = m
    return runs


def test_pack_tokens_and_masks(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    docs = [Document("chat", messages=CHAT), Document("text", text="Plain text is learned everywhere.")]
    stats = pack(docs, tokenizer, tmp_path, "train")
    chat_ids, chat_mask = tokenizer.encode_chat(CHAT)
    text_ids = tokenizer.encode("Plain text is learned everywhere.")
    n_chat = len(chat_ids) + 1
    assert stats.documents == 2
    assert stats.tokens == n_chat + len(text_ids) + 2
    split = PackedSplit(tmp_path, "train")
    assert split.tokens.dtype == np.uint16 and split.mask.dtype == np.uint8
    assert len(split) == stats.tokens
    assert split.tokens.tolist() == [*chat_ids, tokenizer.eos_id, tokenizer.bos_id, *text_ids, tokenizer.eos_id]
    mask = split.mask.tolist()
    assert set(mask) == {0, 1}
    assert mask[:n_chat] == [*chat_mask, 0]
    assert [tokenizer.decode(r) for r in _runs(split.tokens[:n_chat], mask[:n_chat])] == [
        "2 + 3 = 5.<|im_end|>\n", "2 * 3 = 6.<|im_end|>\n"]
    assert mask[n_chat:] == [1] * (len(text_ids) + 2)
    assert stats.target_tokens == sum(mask)
    meta = json.loads((tmp_path / "train.json").read_text())
    assert meta["dtype"] == "uint16" and meta["tokens"] == stats.tokens and meta["vocab_size"] == len(tokenizer)
    assert os.path.getsize(tmp_path / "train.bin") == 2 * stats.tokens
    assert _leftovers(tmp_path) == []


def test_pack_without_assistant_only_learns_the_whole_chat(tokenizer: CodetteTokenizer) -> None:
    ids, mask = encode_document(Document("chat", messages=CHAT), tokenizer, assistant_only=False)
    assert ids[-1] == tokenizer.eos_id
    assert all(mask[:-1])


def test_token_dtype() -> None:
    assert token_dtype(600) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


@pytest.mark.parametrize("suffix", [".bin", ".mask.bin"])
def test_truncated_pack_is_detected(tokenizer: CodetteTokenizer, tmp_path: Path, suffix: str) -> None:
    pack([Document("t", text="some words to pack " * 20)], tokenizer, tmp_path, "val")
    path = tmp_path / f"val{suffix}"
    data = path.read_bytes()
    path.write_bytes(data[:-2])
    with pytest.raises(CodetteError, match="truncated") as exc:
        PackedSplit(tmp_path, "val")
    assert str(path) in str(exc.value)
    path.unlink()
    with pytest.raises(CodetteError, match="missing"):
        PackedSplit(tmp_path, "val")


def test_packed_split_missing_meta(tmp_path: Path) -> None:
    with pytest.raises(CodetteError, match="no packed split"):
        PackedSplit(tmp_path, "train")


def test_pack_empty_corpus_raises_and_leaves_nothing(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    with pytest.raises(CodetteError, match="empty"):
        pack([], tokenizer, tmp_path, "train")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# BatchSampler
# ------------------------------------------------------------------------------------------------
SEQ = 32


@pytest.fixture(scope="module")
def packed(tokenizer: CodetteTokenizer, samples: list, tmp_path_factory: pytest.TempPathFactory) -> PackedSplit:
    folder = tmp_path_factory.mktemp("packed")
    pack([Document("s", messages=s.messages, tools=s.tools) for s in samples[:40]], tokenizer, folder, "train")
    return PackedSplit(folder, "train")


def test_batches_are_a_pure_function_of_seed_and_position(packed: PackedSplit) -> None:
    a, b = BatchSampler(packed, SEQ, seed=7), BatchSampler(packed, SEQ, seed=7)
    n = a.n_blocks
    assert n >= 20
    positions = [0, 3, n - 2, n + 5, 3 * n - 1, 1]  # includes batches across epoch boundaries
    first = [a.batch(p, 4) for p in positions]
    second = [b.batch(p, 4) for p in reversed(positions)][::-1]  # other order, other internal state
    for (x1, y1), (x2, y2) in zip(first, second):
        assert x1.shape == (4, SEQ) and y1.shape == (4, SEQ) and x1.dtype == torch.int64
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    # Sequences are consecutive: batch(p, 4)[j] == batch(p + j, 1)[0].
    x, y = a.batch(n - 2, 4)
    for j in range(4):
        xj, yj = b.batch(n - 2 + j, 1)
        assert torch.equal(x[j], xj[0]) and torch.equal(y[j], yj[0])
    other = BatchSampler(packed, SEQ, seed=8)
    assert not torch.equal(other.batch(0, 4)[0], first[0][0])


def test_each_epoch_visits_every_block_once_in_a_new_order(packed: PackedSplit) -> None:
    s = BatchSampler(packed, SEQ, seed=0)
    n = s.n_blocks
    assert n == (len(packed) - 1) // SEQ
    every = sorted(tuple(x.tolist()) for x, _ in s.sequential(8) for x in x)
    epoch0 = [tuple(s.batch(p, 1)[0][0].tolist()) for p in range(n)]
    epoch1 = [tuple(s.batch(p, 1)[0][0].tolist()) for p in range(n, 2 * n)]
    assert sorted(epoch0) == every and sorted(epoch1) == every
    assert epoch0 != epoch1


def test_targets_are_shifted_inputs_with_masked_positions_ignored(packed: PackedSplit) -> None:
    s = BatchSampler(packed, SEQ, seed=0)
    tokens = np.asarray(packed.tokens, dtype=np.int64)
    mask = np.asarray(packed.mask, dtype=bool)
    ignored = learned = 0
    for block in range(s.n_blocks):
        x, y = s.window(block)
        start = block * SEQ
        assert x.tolist() == tokens[start:start + SEQ].tolist()
        for i in range(SEQ):
            if mask[start + i + 1]:
                assert y[i] == tokens[start + i + 1]
                learned += 1
            else:
                assert y[i] == IGNORE_INDEX
                ignored += 1
    assert ignored > 0 and learned > 0
    x, y = s.batch(5, 4)
    keep = y[:, :-1] != IGNORE_INDEX
    assert torch.equal(x[:, 1:][keep], y[:, :-1][keep])


def test_split_shorter_than_one_sequence_raises(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    pack([Document("t", text="hi")], tokenizer, tmp_path, "val")
    split = PackedSplit(tmp_path, "val")
    with pytest.raises(CodetteError, match="fewer than one sequence"):
        BatchSampler(split, len(split), seed=0)
    assert BatchSampler(split, len(split) - 1, seed=0).n_blocks == 1


def test_document_aligned_starts_cover_every_token_and_start_each_document() -> None:
    from codette.data.loader import document_aligned_starts

    doc_starts = np.array([0, 5, 40, 41, 100])  # lengths 5, 35, 1, 59, 20 (n=120)
    starts = document_aligned_starts(doc_starts, 120, 16)
    assert starts.tolist() == [0, 5, 21, 37, 40, 41, 57, 73, 89, 100, 103]  # last clamped to 120-16-1
    covered = np.zeros(120, dtype=bool)
    for s in starts:
        covered[s:s + 17] = True
    assert covered.all()


def test_training_windows_start_where_conversations_start(packed: PackedSplit, tokenizer: CodetteTokenizer) -> None:
    s = BatchSampler(packed, SEQ, seed=0, aligned=True)
    assert packed.doc_starts is not None and len(packed.doc_starts) == 40
    starts = set(s.starts.tolist())
    fitting = [int(d) for d in packed.doc_starts if int(d) + SEQ + 1 <= len(packed)]
    assert set(fitting) <= starts  # every conversation is seen from its first token
    first = tokenizer.encode_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])[0][0]
    for block in range(s.n_blocks):
        x, _ = s.window(block)
        if int(s.starts[block]) in set(fitting):
            assert x[0] == first  # a window that starts a document starts like a rendered chat
    assert s.n_blocks > BatchSampler(packed, SEQ, seed=0).n_blocks


def test_truncated_document_index_is_a_clear_error(tokenizer: CodetteTokenizer, tmp_path: Path) -> None:
    pack([Document("t", text="hello world " * 50), Document("u", text="more text " * 50)], tokenizer, tmp_path, "val")
    assert PackedSplit(tmp_path, "val").doc_starts.tolist()[0] == 0
    docs = tmp_path / "val.docs.bin"
    docs.write_bytes(docs.read_bytes()[:-3])
    with pytest.raises(CodetteError, match="val.docs.bin is truncated"):
        PackedSplit(tmp_path, "val")


# ------------------------------------------------------------------------------------------------
# Best-fit packing (train.packing = "bestfit")
# ------------------------------------------------------------------------------------------------
BESTFIT_SEQ = 511  # windows of 512 tokens: 33 of the 40 conversations fit one, 7 are longer (up to ~1,400)


def _documents(split: PackedSplit) -> list[tuple[int, int]]:
    starts = [int(s) for s in split.doc_starts]
    return list(zip(starts, [*starts[1:], len(split)]))


@pytest.mark.parametrize("buffer", [8, 1000])  # a few pieces to choose from, or the whole epoch
def test_bestfit_windows_hold_whole_documents_from_their_first_token(
        packed: PackedSplit, tokenizer: CodetteTokenizer, buffer: int) -> None:
    from codette.data.loader import BestFitSampler

    s = BestFitSampler(packed, BESTFIT_SEQ, seed=3, buffer=buffer)
    docs = _documents(packed)
    fits = [(a, b) for a, b in docs if b - a <= BESTFIT_SEQ + 1]
    assert 0 < len(fits) < len(docs)  # both kinds are exercised
    chat_first = tokenizer.encode_chat([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}])[0][0]
    tokens = np.asarray(packed.tokens, dtype=np.int64)
    for epoch in range(2):
        begin = sum(s.windows_in_epoch(e) for e in range(epoch))
        seen: dict[tuple[int, int], int] = {}  # piece -> the window it is in
        for w in range(s.windows_in_epoch(epoch)):
            pieces = s.pieces_at(begin + w)
            assert sum(n for _, n in pieces) <= BESTFIT_SEQ + 1
            for a, n in pieces:
                assert (a, n) not in seen
                seen[(a, n)] = w
            x, _ = s.batch(begin + w, 1)
            first = pieces[0][0]
            doc = next(d for d in docs if d[0] <= first < d[1])
            if first == doc[0]:  # the window starts a document: as a rendered chat starts
                assert x[0, 0] == chat_first
            else:  # the only other start: a piece of a document longer than a window, every seq_len tokens in
                assert doc[1] - doc[0] > BESTFIT_SEQ + 1 and (first - doc[0]) % BESTFIT_SEQ == 0
            filled = np.concatenate([tokens[a:a + n] for a, n in pieces])[:BESTFIT_SEQ]
            assert x[0, :len(filled)].tolist() == filled.tolist()
        # Every document that fits is one piece, whole, in exactly one window; a longer one is cut into
        # pieces every seq_len tokens that share one token each, so every token is read once an epoch.
        for a, b in docs:
            if b - a <= BESTFIT_SEQ + 1:
                assert (a, b - a) in seen
            else:
                mine = sorted(p for p in seen if a <= p[0] < b)
                assert [p[0] for p in mine] == list(range(a, b - 1, BESTFIT_SEQ))
                assert all(n == BESTFIT_SEQ + 1 for _, n in mine[:-1]) and mine[-1][0] + mine[-1][1] == b
        assert sum(n for _, n in seen) == len(packed) + sum(
            max(-(-(b - a - 1) // BESTFIT_SEQ), 1) - 1 for a, b in docs)
    assert 0 <= s.padding_fraction() < 0.25


def test_bestfit_padding_and_piece_starts_are_never_targets(packed: PackedSplit) -> None:
    from codette.data.loader import PAD_ID, BestFitSampler

    s = BestFitSampler(packed, BESTFIT_SEQ, seed=0)
    tokens = np.asarray(packed.tokens, dtype=np.int64)
    mask = np.asarray(packed.mask, dtype=bool)
    padded = 0
    for p in range(s.n_blocks):
        x, y = s.batch(p, 1)
        x, y = x[0].numpy(), y[0].numpy()
        want = np.full(BESTFIT_SEQ + 1, IGNORE_INDEX)  # the target of input position i sits at slot i + 1
        slots = np.full(BESTFIT_SEQ + 1, PAD_ID)
        at = 0
        for a, n in s.pieces_at(p):
            slots[at:at + n] = tokens[a:a + n]
            want[at + 1:at + n] = np.where(mask[a + 1:a + n], tokens[a + 1:a + n], IGNORE_INDEX)
            at += n
        assert x.tolist() == slots[:-1].tolist() and y.tolist() == want[1:].tolist()
        assert (x[at:] == PAD_ID).all() and (y[at - 1:] == IGNORE_INDEX).all()  # padding: no targets
        padded += BESTFIT_SEQ + 1 - at
        assert s.count_targets(p, 1) == int((y != IGNORE_INDEX).sum()) > 0
    assert padded > 0  # otherwise the padding checks prove nothing
    assert s.padding_fraction() == pytest.approx(padded / (s.n_blocks * (BESTFIT_SEQ + 1)))


def test_bestfit_order_is_a_pure_function_of_seed_and_position(packed: PackedSplit) -> None:
    """What a resumed run relies on: a sampler built fresh at a late data position (several epochs in,
    visiting nothing before it) reads the windows the uninterrupted sampler read there."""
    from codette.data.loader import BestFitSampler

    a = BestFitSampler(packed, BESTFIT_SEQ, seed=7)
    counts = [a.windows_in_epoch(e) for e in range(4)]
    n = sum(counts)
    run = [a.batch(p, 1) for p in range(n)]  # the uninterrupted run, four epochs
    b = BestFitSampler(packed, BESTFIT_SEQ, seed=7)
    for p in (n - 2, counts[0] + 1, 0, counts[0] - 1):  # later epochs first; batches across epoch boundaries
        x, y = b.batch(p, 2)
        for j in range(2):
            if p + j < n:
                assert torch.equal(x[j], run[p + j][0][0]) and torch.equal(y[j], run[p + j][1][0])
    epochs = [[a.pieces_at(sum(counts[:e]) + w) for w in range(counts[e])] for e in range(2)]
    assert epochs[0] != epochs[1]  # each epoch packs a new order
    other = BestFitSampler(packed, BESTFIT_SEQ, seed=8)
    assert not torch.equal(other.batch(0, 4)[0], a.batch(0, 4)[0])


def test_reading_plan_counts_reads_per_distinct_token(packed: PackedSplit) -> None:
    from codette.data.loader import BestFitSampler, reading_plan

    stream = BatchSampler(packed, BESTFIT_SEQ, seed=0, aligned=True)
    best = BestFitSampler(packed, BESTFIT_SEQ, seed=0)
    for sampler in (stream, best):
        plan = reading_plan(sampler, steps=10, sequences_per_step=6)
        assert plan["processed_tokens"] == 10 * 6 * BESTFIT_SEQ and plan["distinct_tokens"] == len(packed)
        assert plan["processed_to_distinct"] == pytest.approx(10 * 6 * BESTFIT_SEQ / len(packed))
        assert plan["epochs"] == pytest.approx(60 / sampler.n_blocks)
    # A stream epoch starts a window at every document: it reads each token more than once; best-fit once.
    assert stream.n_blocks * BESTFIT_SEQ > 1.5 * len(packed)
    assert best.n_blocks * (BESTFIT_SEQ + 1) * (1 - best.padding_fraction()) == pytest.approx(
        len(packed) + sum(max(-(-(b - a - 1) // BESTFIT_SEQ), 1) - 1 for a, b in _documents(packed)))
    assert reading_plan(stream, 10, 6)["padding_fraction"] == 0.0 < reading_plan(best, 10, 6)["padding_fraction"]


def test_bestfit_needs_document_starts(packed: PackedSplit, tmp_path: Path) -> None:
    from codette.data.loader import BestFitSampler

    for suffix in (".bin", ".mask.bin", ".json"):
        (tmp_path / f"train{suffix}").write_bytes((Path(packed.tokens.filename).parent / f"train{suffix}").read_bytes())
    with pytest.raises(CodetteError, match="train.packing='bestfit' needs to know where the documents"):
        BestFitSampler(PackedSplit(tmp_path, "train"), BESTFIT_SEQ, seed=0)
