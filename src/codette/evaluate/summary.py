"""``eval.json`` summarised: ``eval.md`` and the console tables, every figure with its interval and probe count.

Why Markdown: it reads well in a terminal, on GitHub and pasted into an issue, and diffing two
reports shows what changed between checkpoints. The definitions live in docs/EVALUATION.md.
"""

from __future__ import annotations

import json
import math
from typing import Any

ROWS = [
    ("Tool use", [("tool_json_valid", "emitted a parseable tool call"), ("tool_right_tool", "... naming the right tool"),
                  ("tool_args_valid", "... with schema-valid arguments"),
                  ("tool_result_match", "... that return the reference call's result"),
                  ("tool_task_success", "... and a final answer with the tool's result"),
                  ("tool_abstain", "no tool call when none is needed")]),
    ("Identity", [("identity_score", "identity questions"), ("self_reference_score", "self-reference questions"),
                  ("intentionality_score", "intentionality questions"),
                  ("consciousness_score", "mean of the three (behavioral measure)"),
                  ("identity_marker_rate", "answer starts with <consciousness> (not scored)")]),
    ("Perspectives", [("perspective_marker_accuracy", "first <perspective> marker is the one asked for"),
                      ("perspective_style_accuracy", "dominant style vocabulary is the one asked for"),
                      ("perspective_adherence", "both")]),
    ("Summary", [("behavior_score", "mean of tool_task_success, consciousness_score, perspective_adherence")]),
]


def _num(x: Any, fmt: str = "{:.4f}") -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.1%}"


def _esc(text: str, limit: int = 240) -> str:
    text = text.replace("|", "\\|").replace("\n", "⏎ ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def markdown(report: dict[str, Any], probe_results: list[dict] | None = None, examples: int = 2) -> str:
    """The report as Markdown; ``probe_results`` (eval_probes.jsonl) adds failure examples."""
    out = [f"# Evaluation of `{report.get('checkpoint')}`", ""]
    out.append(f"Backend: {report.get('backend', 'local')}; training step: {report.get('step')}. "
               "Metric definitions: docs/EVALUATION.md. Intervals are 95% (Wilson for proportions, "
               "Jeffreys-posterior draws for means of several rates).")
    split = report.get("split", "test")
    out += ["", f"## Language modelling ({split} split, target tokens)", "", "| metric | value |", "|---|---|"]
    for key, label in [("loss", "loss (nats/token)"), ("perplexity", "perplexity"),
                       ("token_accuracy", "token accuracy"), ("bits_per_byte", "bits per byte"),
                       ("target_tokens", "target tokens"), ("target_bytes", "target bytes")]:
        if key in report:
            out.append(f"| {label} | {_num(report[key], '{:,}' if key.startswith('target_') else '{:.4f}')} |")
    figures = (report.get("behavior") or {}).get("figures")
    if figures:
        info = report.get("probes", {})
        out += ["", "## Behavior", "",
                f"Probes from `{info.get('source')}`: {info.get('selected')} selected of {info.get('available')} "
                f"({info.get('seen_in_train_dropped')} dropped because their prompt occurs in train.jsonl; "
                f"limit {info.get('per_kind_limit')} per kind).", ""]
        for title, rows in ROWS:
            out += [f"### {title}", "", "| metric | value | 95% CI | n | meaning |", "|---|---|---|---|---|"]
            for key, meaning in rows:
                f = figures.get(key)
                if f:
                    out.append(f"| `{key}` | {_pct(f['value'])} | [{_pct(f['low'])}, {_pct(f['high'])}] | {f['n']} "
                               f"| {meaning} |")
            out.append("")
        beh = report["behavior"]
        if beh.get("by_tool"):
            out += ["### By tool", "", "| tool | n | right tool | args valid | result match | task success |",
                    "|---|---|---|---|---|---|"]
            for tool, r in beh["by_tool"].items():
                out.append(f"| {tool} | {r['n']} | {r['right_tool']} | {r['args_valid']} | {r.get('result_match', 'n/a')} "
                           f"| {r['task_success']} |")
            out.append("")
        if beh.get("by_question_type"):
            out += ["### Identity by question type", "", "| question type | n | score 1 |", "|---|---|---|"]
            for q, r in beh["by_question_type"].items():
                out.append(f"| {q} | {r['n']} | {r['score']} |")
            out.append("")
        for key, title in (("confusion", "marker"), ("style_confusion", "dominant style")):
            cm = beh.get(key)
            if cm and any(any(row) for row in cm["counts"]):
                out += [f"### Perspective confusion ({title}): rows asked, columns answered", ""]
                out.append("| asked \\ answered | " + " | ".join(cm["columns"]) + " |")
                out.append("|---" * (len(cm["columns"]) + 1) + "|")
                for label, row in zip(cm["labels"], cm["counts"]):
                    out.append(f"| {label} | " + " | ".join(str(c) if c else "·" for c in row) + " |")
                out.append("")
        if beh.get("backend_errors"):
            out.append(f"{beh['backend_errors']} probe(s) could not be generated (e.g. prompt longer than the "
                       "context); they count as failures.\n")
    if report.get("natural"):
        out += natural_markdown(report["natural"])
    if probe_results:
        out += ["## Failure examples", ""]
        for kind in ("tool", "no_tool", "identity", "perspective"):
            bad = [r for r in probe_results if r["kind"] == kind and not _passed(r)][:examples]
            for r in bad:
                why = r["score"].get("error") or r["score"].get("missing") or r["score"].get("contradictions") or ""
                out.append(f"- **{kind}** `{r['id']}`: {_esc(str(why), 120)}<br>reply: `{_esc(r['reply'])}`")
        out.append("")
    if report.get("samples"):
        out += ["## Sample chats (greedy, through the agent's tool loop with its default tools)", ""]
        for chat in report["samples"]:
            calls = "".join(f"<br>**tool:** `{_esc(c['name'])}` {_esc(json.dumps(c['arguments']), 120)}"
                            for c in chat.get("tool_calls", []))
            verdict = f" ({'right' if chat['right'] else 'wrong'}: {_esc(chat.get('why', ''), 120)})" \
                if "right" in chat else ""
            out.append(f"- **user:** {_esc(chat['user'])}{calls}<br>**assistant:** "
                       f"{_esc(chat['assistant'], 400)}{verdict}")
    return "\n".join(out) + "\n"


NATURAL_ROWS = [("right_tool", "tool items: the calls name exactly the expected tools"),
                ("copy", "tool items: the calls carry the values the user wrote"),
                ("task_success", "tool items: right tool, and the answer holds the real result"),
                ("abstain", "relevance and chat items: no tool call"),
                ("identity", "identity questions answered truthfully"),
                ("perspective", "the perspective asked for (marker and style)"),
                ("json_valid", "replies that open a call: every call parses"),
                ("args_valid", "... and names an offered tool, with arguments valid under its schema"),
                ("finished", "... whose end the finishing policy wrote, to fit the token budget")]


def natural_markdown(section: dict[str, Any]) -> list[str]:
    """The natural-prompt section of eval.md: headline figures, then by category and by tool."""
    info = section["set"]
    out = ["## Natural prompts", "", f"{info['items']} hand-written items from `{info['source']}` (version "
           f"{info['version']}, sha256 {info['sha256'][:12]}), through the agent's tool loop.", "",
           "| metric | value | 95% CI | n | meaning |", "|---|---|---|---|---|"]
    for key, meaning in NATURAL_ROWS:
        f = section["figures"].get(key)
        if f is None:  # a figure an older run did not have
            continue
        out.append(f"| `{key}` | {_pct(f['value'])} | [{_pct(f['low'])}, {_pct(f['high'])}] | {f['n']} | {meaning} |")
    for title, table in (("category", section["by_category"]), ("tool", section["by_tool"])):
        out += ["", f"| {title} | metric | value | 95% CI | n |", "|---|---|---|---|---|"]
        for name, figs in table.items():
            for key, f in figs.items():
                ci = f"[{_pct(f['low'])}, {_pct(f['high'])}]"
                out.append(f"| {name} | {key} | {_pct(f['value'])} | {ci} | {f['n']} |")
    return out + [""]


def _passed(r: dict) -> bool:
    s = r["score"]
    return bool(s.get("task_success", s.get("abstained", s.get("score", s.get("adherent", 0)))))


def console_tables(report: dict[str, Any]) -> list:
    """Rich tables for the terminal: LM metrics, then each behavioral figure with its interval and n."""
    from rich.table import Table

    step = report.get("step")
    split = report.get("split", "test")
    lm = Table(title=f"Held-out evaluation ({split} split) of {report.get('checkpoint')}"
                     + (f" (step {step})" if step is not None else ""))
    lm.add_column("metric")
    lm.add_column("value", justify="right")
    for key, label, fmt in [("loss", "loss (nats/token)", "{:.4f}"), ("perplexity", "perplexity", "{:.3f}"),
                            ("token_accuracy", "token accuracy", "{:.2%}"),
                            ("bits_per_byte", "bits per byte", "{:.4f}"), ("target_tokens", "target tokens", "{:,}")]:
        if key in report:
            lm.add_row(label, _num(report[key], fmt))
    tables = [lm]
    figures = (report.get("behavior") or {}).get("figures")
    if figures:
        t = Table(title="Behavioral probes (95% CI; definitions in docs/EVALUATION.md)")
        for col in ("metric", "value", "95% CI", "n"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for _, rows in ROWS:
            for key, _meaning in rows:
                f = figures.get(key)
                if f:
                    t.add_row(key, _pct(f["value"]), f"[{_pct(f['low'])}, {_pct(f['high'])}]", str(f["n"]))
        tables.append(t)
    natural = report.get("natural")
    if natural:
        t = Table(title=f"Natural prompts ({natural['set']['items']} hand-written items, 95% CI)")
        for col in ("metric", "value", "95% CI", "n"):
            t.add_column(col, justify="left" if col == "metric" else "right")
        for key, _meaning in NATURAL_ROWS:
            f = natural["figures"].get(key)
            if f is None:
                continue
            t.add_row(key, _pct(f["value"]), f"[{_pct(f['low'])}, {_pct(f['high'])}]", str(f["n"]))
        tables.append(t)
    return tables
