"""The copy monitor (codette.evaluate.copying): the values a call must copy and their exact target positions on a
hand-made conversation, scores of a model forced to the right tokens (1.0) and of a random one (about 0), the
unseen-in-train check, and in a tiny training run: the figures in the metrics log and the report's plot data,
with losses and weights bit-identical to the same run without the monitor."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from codette.cli import stages
from codette.evaluate.copying import (
    CopyTally,
    copy_case,
    copy_values,
    score_case,
    score_copies,
    target_positions,
    text_copy_case,
    text_copy_values,
    unseen_in,
)
from codette.data.copydocs import iter_copy_records
from codette.report import build_report, load_run
from codette.report.plots import copy_series
from codette.tokenizer import CodetteTokenizer
from codette.tools.calls import format_tool_call
from tests._pipeline import QUIET, losses, tiny_config

VALUE = "notes_2024.txt"
PARAMETERS = {"type": "object", "properties": {"path": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "read_file", "description": "Read a text file.",
                                           "parameters": PARAMETERS}}]


def conversation(value: str = VALUE, user: str | None = None) -> list[dict]:
    """One request, one call: ``path`` is copied from the request, ``mode`` and ``lines`` are not in it."""
    args = {"path": value, "mode": "text", "lines": 40, "strict": True}
    return [
        {"role": "system", "content": "You are Codette."},
        {"role": "user", "content": user if user is not None else f"Please read {value} and the first 3 lines."},
        {"role": "assistant", "content": None,
         "tool_calls": [{"type": "function", "function": {"name": "read_file", "arguments": args}}]},
        {"role": "tool", "content": '{"content": "hello"}'},
        {"role": "assistant", "content": "It says hello."},
    ]


# ---- the text part ---------------------------------------------------------------------------------------
def test_copy_values_are_the_call_values_the_user_wrote() -> None:
    text, values = copy_values(conversation(), TOOLS)
    assert [(v.tool, v.argument, v.text) for v in values] == [("read_file", "path", VALUE)]
    v = values[0]
    assert text[v.start:v.end] == VALUE and text[v.start - 1] == '"' and text[v.end] == '"'
    assert text[v.source:v.source + len(VALUE)] == VALUE and v.source < text.index("<|im_start|>assistant")
    # not inside a longer word; a number the user wrote counts; a value with no letter or digit does not
    assert copy_values(conversation("art", "Show me the party list."), TOOLS)[1] == []
    call = {"function": {"name": "web_search", "arguments": {"query": "x", "max_results": 40}}}
    _, numbers = copy_values([{"role": "user", "content": "Give me the top 40 results."},
                              {"role": "assistant", "content": None, "tool_calls": [call]}])
    assert [(v.argument, v.text) for v in numbers] == [("max_results", "40")]
    assert copy_values(conversation("...", "Read ... now"), TOOLS)[1] == []


def test_a_value_the_call_escapes_is_located_in_its_escaped_form() -> None:
    value = 'say "hi".txt'
    text, values = copy_values(conversation(value), TOOLS)
    assert len(values) == 1 and values[0].raw == value and values[0].text == 'say \\"hi\\".txt'
    assert text[values[0].start:values[0].end] == values[0].text


def test_copy_documents_are_scored_on_each_call_the_request_before_it_wrote(tokenizer: CodetteTokenizer) -> None:
    """The copy stage's data: each call's values that its own request (since the blank line) holds, in place."""
    doc = ("What is 37 * 91?\n" + format_tool_call("calculator", {"expression": "37 * 91"}) +
           '\n{"result": 3367}\n37 * 91 = 3367.\n\nRead notes.md, please.\n' +
           format_tool_call("read_file", {"path": "notes.md"}) + "\nIt says hi.\n\nRead it again.\n" +
           format_tool_call("read_file", {"path": "37"}))  # 37 is in an earlier request only: not checked
    values = text_copy_values(doc)
    assert [(v.tool, v.argument, v.text) for v in values] == [("calculator", "expression", "37 * 91"),
                                                                ("read_file", "path", "notes.md")]
    for v in values:
        assert doc[v.start:v.end] == v.text and doc[v.source:v.source + len(v.raw)] == v.raw and v.source < v.start
    case = text_copy_case(doc, tokenizer, context=10_000)
    assert case is not None and case.ids == tokenizer.encode(doc)[:case.targets[-1][-1] + 1]
    assert ["".join(tokenizer.decode([case.ids[k]]) for k in t) for t in case.targets] == ["37 * 91", "notes.md"]
    # the generator's own documents: every call is found, and most values are the request's
    records = list(iter_copy_records(6, seed=3))
    calls = sum(r["text"].count("<tool_call>") for r in records)
    found = [text_copy_values(r["text"]) for r in records if r["template"] == "calls"]
    assert calls > 30 and sum(map(len, found)) >= calls * 0.8


def test_target_positions_are_the_tokens_overlapping_the_value() -> None:
    offsets = [(0, 2), (2, 4), (4, 7), (7, 9), (9, 9), (9, 12)]
    assert target_positions(offsets, 4, 9) == [2, 3]
    assert target_positions(offsets, 3, 10) == [1, 2, 3, 4, 5]  # partly covered tokens count, an empty one inside
    assert target_positions(offsets, 10, 12) == [5] and target_positions(offsets, 7, 9) == [3]
    assert target_positions(offsets, 0, 2) == []  # token 0 has no position before it to predict it


def test_span_finder_returns_exactly_the_values_target_positions(tokenizer: CodetteTokenizer) -> None:
    case = copy_case(conversation(), TOOLS, tokenizer, context=10_000)
    assert case is not None and len(case.targets) == 1
    targets = case.targets[0]
    text = copy_values(conversation(), TOOLS)[0]
    assert case.ids == tokenizer.encode(text)[:targets[-1] + 1]  # the conversation up to the value's end
    assert targets == list(range(targets[0], targets[-1] + 1))  # contiguous
    assert "".join(tokenizer.decode([case.ids[k]]) for k in targets) == VALUE  # the value, nothing more
    assert tokenizer.decode([case.ids[targets[0] - 1]]).endswith('"')  # the token before is the opening quote
    # the value's own tokens, found by tokenizing the text before it and the text through it
    start = text.index(VALUE, text.index("<|im_start|>assistant"))
    before, through = tokenizer.encode(text[:start]), tokenizer.encode(text[:start + len(VALUE)])
    assert through[:len(before)] == before and targets == list(range(len(before), len(through)))


def test_a_value_whose_request_lies_outside_the_window_is_not_checked(tokenizer: CodetteTokenizer) -> None:
    full = copy_case(conversation(), TOOLS, tokenizer, context=10_000)
    assert full is not None
    targets = full.targets[0]
    short = copy_case(conversation(), TOOLS, tokenizer, context=len(targets) + 4)
    assert short is None  # the window holds the call but not the user's request
    text = copy_values(conversation(), TOOLS)[0]
    source = text.index(VALUE)  # the user's request
    source_token = next(k for k, (a, b) in enumerate(tokenizer.encode_with_offsets(text)[1]) if a <= source < b)
    fits = copy_case(conversation(), TOOLS, tokenizer, context=targets[-1] + 1 - source_token)
    assert fits is not None and fits.ids == full.ids[source_token:] and fits.targets == [
        [k - source_token for k in targets]]  # the smallest window that still holds the request
    assert copy_case(conversation(), TOOLS, tokenizer, context=targets[-1] - source_token) is None


def test_tally_counts_values_tokens_and_unseen_values() -> None:
    ids = [5, 6, 7, 8, 9]
    hits = score_case([6, 7, 0, 9], ids, [[1, 2], [3, 4]])
    assert hits == [[True, True], [False, True]]
    tally = CopyTally()
    tally.add(hits, [True, False])
    assert tally.figures() == {"copy_exact": 0.5, "copy_token_acc": 0.75, "copy_n": 2, "copy_tokens": 4,
                               "copy_unseen": 1, "copy_exact_unseen": 1.0}
    assert CopyTally().figures() == {}


def test_unseen_means_in_no_form_anywhere_in_train_jsonl(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": 'read alpha.txt and say "hi" to café'}]},
                                ensure_ascii=False) + "\n" + json.dumps({"text": "naïve"}) + "\n", encoding="utf-8")
    texts = ["alpha.txt", 'say "hi"', "café", "naïve", "beta.txt"]
    for chunk in (4, 1 << 20):  # values cut by a chunk boundary are still found
        unseen, read = unseen_in(texts, train, chunk=chunk)
        assert unseen == [False, False, False, False, True] and read == train.stat().st_size
    cut = train.read_bytes().index(b"alpha.txt") + len("alpha.txt")  # a sample: the file's first bytes only
    assert unseen_in(texts, train, max_bytes=cut, chunk=4) == ([False, True, True, True, True], cut)
    assert unseen_in(texts, tmp_path / "missing.jsonl") == ([False] * 5, 0)  # nothing shown unseen


# ---- the model part --------------------------------------------------------------------------------------
class Forced(torch.nn.Module):
    """Logits whose argmax at every position is the next input token: a perfect teacher-forced copier."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab = vocab
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(*idx.shape, self.vocab)
        logits[:, :-1].scatter_(-1, idx[:, 1:, None], 1.0)
        return logits


class Random(Forced):
    """Logits drawn from its own generator (never the global one)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(int(idx.sum()))
        return torch.randn(*idx.shape, self.vocab, generator=gen)


def _cases(tokenizer: CodetteTokenizer) -> list:
    rng = random.Random(0)
    names = ["".join(rng.choice("bdfgklmnprst") + rng.choice("aeiou") for _ in range(4)) + f"_{rng.randint(1, 99)}.md"
             for _ in range(12)]
    cases = [copy_case(conversation(n), TOOLS, tokenizer, context=10_000) for n in names]
    assert all(c is not None for c in cases)
    for c in cases:
        c.unseen = [True] * len(c.values)
    return cases


def test_forced_logits_score_one_and_random_logits_about_zero(tokenizer: CodetteTokenizer) -> None:
    cases = _cases(tokenizer)
    forced = Forced(len(tokenizer)).train()
    before = torch.get_rng_state()
    tally = score_copies(forced, cases)
    assert forced.training and torch.equal(torch.get_rng_state(), before)  # mode restored, no random draw
    figures = tally.figures()
    assert figures["copy_n"] == 12 and figures["copy_exact"] == 1.0 and figures["copy_token_acc"] == 1.0
    assert figures["copy_exact_unseen"] == 1.0 and figures["copy_tokens"] > 12
    noise = score_copies(Random(len(tokenizer)), cases).figures()
    assert noise["copy_n"] == 12 and noise["copy_exact"] == 0.0 and noise["copy_token_acc"] < 0.05


# ---- in training and in the report -----------------------------------------------------------------------
@pytest.mark.slow
def test_copy_figures_in_the_metrics_log_and_report_and_training_unchanged(prepared: Path, tmp_path: Path) -> None:
    """Same losses and weights with the monitor on and off (fp32, dropout on: a stray random draw would show)."""
    runs = {}
    for name, records in (("off", 0), ("on", 16)):
        out = tmp_path / name
        shutil.copytree(prepared, out)
        cfg = tiny_config(out, **{"train.max_steps": 12, "train.eval_every": 4, "train.probes": 0,
                                  "train.copy_monitor": records, "train.dtype": "fp32", "model.max_seq_len": 256,
                                  "model.dropout": 0.1})
        stages.run_train(cfg, QUIET)
        runs[name] = out
    assert losses(runs["off"] / "logs") == losses(runs["on"] / "logs")
    a = torch.load(runs["off"] / "model_final.pt", weights_only=False)["model"]
    b = torch.load(runs["on"] / "model_final.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    evals = {name: [r for f in (out / "logs").glob("metrics_*.jsonl")
                    for r in map(json.loads, f.read_text().splitlines()) if r["kind"] == "eval"]
             for name, out in runs.items()}
    assert not any(k.startswith("copy_") for e in evals["off"] for k in e)
    assert [e["step"] for e in evals["on"]] == [4, 8, 12]
    for e in evals["on"]:
        assert 0 < e["copy_n"] <= e["copy_tokens"] and 0 <= e["copy_unseen"] <= e["copy_n"]
        assert 0.0 <= e["copy_exact"] <= 1.0 and 0.0 <= e["copy_token_acc"] <= 1.0
        assert e["copy_exact"] * e["copy_n"] == pytest.approx(round(e["copy_exact"] * e["copy_n"]))  # a share of n
    log_text = next((runs["on"] / "logs").glob("training_*.log")).read_text()
    assert f"copy {evals['on'][-1]['copy_exact']:.0%} of {evals['on'][-1]['copy_n']}" in log_text

    series = copy_series(load_run(runs["on"]))
    assert [(s, v, n) for s, v, n in series["copy_exact"]] == [(e["step"], e["copy_exact"], e["copy_n"])
                                                              for e in evals["on"]]
    assert [p[:2] for p in series["copy_token_acc"]] == [(e["step"], e["copy_token_acc"]) for e in evals["on"]]
    rep = build_report(runs["on"], tmp_path / "rep")
    assert "copy" in rep.plots and rep.plots["copy"].read_bytes()[:4] == b"\x89PNG"
    assert "copy monitor (step 12)" in rep.html.read_text(encoding="utf-8")
    assert "copy" not in build_report(runs["off"], tmp_path / "rep_off").plots
