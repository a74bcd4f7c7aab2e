"""Minimal behavioural check of a trained checkpoint on the held-out (val) conversations.

A stop-gap until ``codette.evaluate`` grows behavioural metrics (issue 6). For each val record the
model continues the conversation greedily, and we score what it wrote:

* tools (a call expected): the output parses as a Hermes tool call (``json_valid``), names the
  record's tool (``right_tool``), and its arguments match that tool's schema (``args_valid``);
* tools (no call expected): no tool call is written (``no_call``);
* perspectives: the answer starts with ``<perspective> <requested key>`` (``perspective_used``) and its
  vocabulary is that perspective's (``style_match``, :func:`codette.data.curriculum.styles.dominant_style`);
* consciousness: the last answer names Codette and contradicts none of the facts (``identity_consistent``,
  :func:`codette.data.facts.identity_consistent`);
* mixed: at least two ``<perspective>`` markers and a synthesis (``mixed_form``).

Usage: ``python benchmarks/behavior_check.py OUT_DIR [--limit 150]`` (OUT_DIR from ``codette quickstart -o``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from pathlib import Path

from codette.backends.local import LocalBackend
from codette.data.curriculum.styles import dominant_style
from codette.data.curriculum.toolrun import check_call
from codette.data.facts import identity_consistent
from codette.errors import CodetteError
from codette.model.generate import SamplingConfig
from codette.tools import ToolCallParseError, parse_tool_calls


def prompt_of(rec: dict) -> list[dict]:
    """The conversation up to the assistant turn the model must write (the last one for consciousness)."""
    msgs = rec["messages"]
    turns = [i for i, m in enumerate(msgs) if m["role"] == "assistant"]
    return msgs[: turns[-1] if rec["category"] == "consciousness" else turns[0]]


def score(rec: dict, out: str) -> dict[str, bool]:
    cat = rec["category"]
    if cat == "tools":
        try:
            calls = parse_tool_calls(out)
        except ToolCallParseError:
            calls = None
        if rec.get("tool") is None:
            return {"no_call": not calls and "<tool_call>" not in out}
        ok = bool(calls)
        right = ok and calls[0].name == rec["tool"]
        args_ok = False
        if right:
            try:
                check_call(calls[0].name, calls[0].arguments)
                args_ok = True
            except CodetteError:
                pass
        return {"json_valid": ok, "right_tool": right, "args_valid": args_ok}
    if cat == "perspectives":
        key = rec["perspective"]
        return {"perspective_used": out.startswith(f"<perspective> {key}\n") or out == f"<perspective> {key}",
                "style_match": dominant_style(out) == key}
    if cat == "consciousness":
        return {"identity_consistent": out.startswith("<consciousness>") and identity_consistent(out)}
    return {"mixed_form": len(re.findall(r"<perspective> \w+", out)) >= 2 and "Synthesis" in out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--checkpoint", default="model_best.pt")
    ap.add_argument("--limit", type=int, default=150, help="at most this many val records per category")
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--json", type=Path, default=None, help="write the results here (default OUT_DIR/behavior.json)")
    args = ap.parse_args()
    backend = LocalBackend(args.out_dir / args.checkpoint)
    ctx = backend.model.cfg.max_seq_len
    recs = [json.loads(line) for line in (args.out_dir / "data" / "val.jsonl").read_text().splitlines() if line]
    per_cat: dict[str, int] = defaultdict(int)
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    too_long = 0
    examples: list[dict] = []
    t0 = time.perf_counter()
    for rec in recs:
        cat = rec.get("category")
        if cat is None or per_cat[cat] >= args.limit:
            continue
        msgs = prompt_of(rec)
        n_prompt = len(backend.prompt_ids(msgs, rec.get("tools")))
        if n_prompt >= ctx - 8:
            too_long += 1
            continue
        per_cat[cat] += 1
        sampling = SamplingConfig(max_new_tokens=min(args.max_new_tokens, ctx - n_prompt), temperature=0.0)
        out = backend.chat(msgs, rec.get("tools"), sampling=sampling)
        result = score(rec, out)
        for k, v in result.items():
            totals[k][0] += int(v)
            totals[k][1] += 1
        if not all(result.values()) and len(examples) < 40:
            examples.append({"category": cat, "prompt": msgs[-1]["content"], "output": out, "score": result,
                             "expected": rec.get("tool") or rec.get("perspective") or rec.get("aspect")})
    metrics = {k: {"rate": ok / n, "passed": ok, "total": n} for k, (ok, n) in sorted(totals.items())}
    report = {"checkpoint": str(args.out_dir / args.checkpoint), "records": dict(per_cat), "skipped_too_long": too_long,
              "seconds": time.perf_counter() - t0, "metrics": metrics, "failures": examples}
    path = args.json or args.out_dir / "behavior.json"
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    for k, m in metrics.items():
        print(f"{k:22s} {m['rate']:7.1%}  ({m['passed']}/{m['total']})")
    print(f"records per category: {dict(per_cat)}; prompts too long for the context: {too_long}; "
          f"{report['seconds']:.0f} s; details in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
