"""`codette report RUN_DIR`: PNG plots, a one-page HTML summary and (optionally) TensorBoard events.

Input is what training already writes: the ``metrics_*.jsonl`` log (found by
:func:`codette.report.records.find_metrics_files` in the run folder, its ``training_logs/`` or the
``log_dir`` of its ``run_config.json``) and, when the run folder has one, the ``eval.json`` of
``codette eval``. Output (default ``<RUN_DIR>/report/``)::

    loss.png, lr.png, tokens_per_second.png, grad_norm.png, behavior.png, copy.png   (those the log has data for)
    report.html     one self-contained page: the PNGs are embedded as data URIs, so the file can be
                    mailed or attached on its own; the PNGs stay beside it for READMEs and slides
    tensorboard/    event files of every train/eval record (only with ``tensorboard=True``)

Every file appears atomically (written beside its final name, then renamed), and the TensorBoard
folder is replaced as a whole, so a report rebuilt while a run is still training never shows
half-written files or duplicated curves.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from codette.errors import CodetteError
from codette.fileio import atomic_write_text, ensure_writable_dir
from codette.report.plots import copy_series, plot_all
from codette.report.records import RunSeries, load_run
from codette.scoring.stats import wilson

log = logging.getLogger(__name__)

PLOT_TITLES = {
    "loss": "Training and validation loss",
    "lr": "Learning rate",
    "tokens_per_second": "Throughput",
    "grad_norm": "Gradient norm",
    "behavior": "Behavioral probes during training",
    "copy": "Copy monitor: the user's values in tool calls",
}
# Behavioral figures of eval.json in the order the HTML lists them, with what each one counts.
EVAL_ROWS = [
    ("tool_json_valid", "emitted a parseable tool call"),
    ("tool_right_tool", "... naming the right tool"),
    ("tool_args_valid", "... with schema-valid arguments"),
    ("tool_result_match", "... that return the reference call's result"),
    ("tool_task_success", "... and a final answer carrying the tool's result"),
    ("tool_abstain", "no tool call when none is needed"),
    ("identity_score", "identity questions answered true to the facts"),
    ("self_reference_score", "self-reference questions"),
    ("intentionality_score", "intentionality questions"),
    ("consciousness_score", "mean of the three above (behavioral measure)"),
    ("perspective_marker_accuracy", "first <perspective> marker is the one asked for"),
    ("perspective_style_accuracy", "dominant style vocabulary is the one asked for"),
    ("perspective_adherence", "marker and style both right"),
    ("behavior_score", "mean of tool_task_success, consciousness_score, perspective_adherence"),
]


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out_dir: Path
    html: Path
    plots: dict[str, Path] = field(default_factory=dict)
    tensorboard: Path | None = None
    eval_json: Path | None = None
    run: RunSeries | None = field(default=None, repr=False)


def _default_out(source: Path) -> Path:
    return (source.parent if source.is_file() else source) / "report"


def _find_eval(source: Path) -> Path | None:
    """``eval.json`` of the run folder (the folder given, or the one holding the given JSONL's log folder)."""
    folders = [source] if source.is_dir() else [source.parent, source.parent.parent]
    for d in folders:
        p = d / "eval.json"
        if p.is_file():
            return p
    return None


def _load_eval(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CodetteError(f"{path}: not a valid eval.json ({exc})") from None
    if not isinstance(data, dict):
        raise CodetteError(f"{path}: expected a JSON object")
    return data


def _write_tensorboard(run: RunSeries, out_dir: Path) -> Path:
    """Replace ``out_dir/tensorboard`` with freshly written events (no duplicated curves on rebuilds)."""
    from codette.tensorboard import write_events

    final = out_dir / "tensorboard"
    tmp = Path(tempfile.mkdtemp(prefix=".tensorboard.", dir=out_dir))
    try:
        write_events(run.records, tmp)
        if final.exists():
            old = Path(tempfile.mkdtemp(prefix=".tensorboard.old.", dir=out_dir))
            os.replace(final, old / "tb")
            shutil.rmtree(old, ignore_errors=True)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_report(source: Path | str, out_dir: Path | str | None = None, tensorboard: bool = False,
                 eval_json: Path | str | None = None) -> Report:
    """Plots, ``report.html`` and optionally TensorBoard events for the run in ``source``.

    ``source`` is a run folder (``codette_model/``), a training log folder or one ``metrics_*.jsonl``;
    ``eval_json`` defaults to the run folder's ``eval.json`` when there is one. Raises a
    :class:`CodetteError` when there is no metrics log or it has no train/eval records.
    """
    source = Path(source)
    run = load_run(source)
    out = ensure_writable_dir(Path(out_dir) if out_dir is not None else _default_out(source))
    plots = plot_all(run, out)
    eval_path = Path(eval_json) if eval_json is not None else _find_eval(source)
    if eval_path is not None and not eval_path.is_file():
        raise CodetteError(f"eval file not found: {eval_path}")
    evaluation = _load_eval(eval_path)
    tb = _write_tensorboard(run, out) if tensorboard else None
    page = render_html(run, plots, evaluation, eval_path, tb)
    html_path = out / "report.html"
    atomic_write_text(html_path, page)
    log.info("report: %s (%d plots%s)", html_path, len(plots), ", TensorBoard events" if tb else "")
    return Report(out, html_path, plots, tb, eval_path, run)


# ---- HTML ---------------------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1180px;margin:24px auto;padding:0 16px;
color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;border-bottom:1px solid #ddd;padding-bottom:3px;margin-top:1.4em}
.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.9em;margin:.4em 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f5f5f5}
td:first-child,th:first-child{text-align:left}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:10px}
.grid figure{margin:0}.grid img{width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555}
.cm td{text-align:center;min-width:1.6em}.note{background:#fafafa;border-left:3px solid #bbb;padding:6px 10px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and not math.isnan(x)


def _fmt(x: Any, spec: str = "{:.4f}") -> str:
    return spec.format(x) if _is_num(x) else "n/a"


def _pct(x: Any) -> str:
    return f"{x:.1%}" if _is_num(x) else "n/a"


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{f' class={cls!r}' if cls else ''}><tr>{head}</tr>{body}</table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)} ({_e(path.name)})</figcaption></figure>")


def _last(points: list[tuple]) -> tuple | None:
    return points[-1] if points else None


def _summary_rows(run: RunSeries) -> list[list[str]]:
    s = run.start
    rows: list[list[str]] = []
    if s:
        rows.append(["parameters", _e(f"{s['params']:,}") if _is_num(s.get("params")) else "n/a"])
        rows.append(["device / sequence length", _e(f"{s.get('device', '?')} / {s.get('seq_len', '?')}")])
        if _is_num(s.get("train_tokens")):
            rows.append(["train / val tokens", _e(f"{s['train_tokens']:,} / {s.get('val_tokens', 0):,}")])
    rows.append(["steps logged", _e(f"{run.last_step:,}")])
    loss = run.train.get("loss", [])
    if loss:
        tail = [v for _, v in loss[-max(1, min(25, len(loss))):]]
        rows.append([f"train loss (first step / mean of last {len(tail)})",
                     f"{_fmt(loss[0][1])} / {_fmt(statistics.fmean(tail))}"])
    val = run.eval.get("val_loss", [])
    if val:
        best = min(val, key=lambda p: p[1])
        rows.append(["val loss (last / best)", f"{_fmt(val[-1][1])} / {_fmt(best[1])} at step {best[0]}"])
    acc = _last(run.eval.get("token_accuracy", []))
    if acc:
        rows.append(["val token accuracy (last)", _pct(acc[1])])
    tps = [v for _, v in run.train.get("tokens_per_second", [])]
    if tps:
        rows.append(["tokens/s (median over steps)", _e(f"{statistics.median(tps):,.0f}")])
    copies = copy_series(run)
    if copies.get("copy_exact"):
        step, exact, n = copies["copy_exact"][-1]
        unseen = _last([p for p in copies.get("copy_exact_unseen", []) if p[0] == step])
        tokens = _last([p for p in copies.get("copy_token_acc", []) if p[0] == step])
        rows.append([f"copy monitor (step {step})",
                     f"{_pct(exact)} of {n} values copied exactly"
                     + (f"; {_pct(unseen[1])} of the {unseen[2]} not in train.jsonl" if unseen else "")
                     + (f"; value tokens {_pct(tokens[1])}" if tokens else "")])
    over = _last(run.eval.get("probe_overhead", []))
    if over:
        secs = sum(v for _, v in run.eval.get("probe_seconds", []))
        rows.append(["behavioral probes during training", f"{secs:.1f} s, {over[1]:.1%} of the training time"])
    for ev in run.events:
        rows.append([_e(ev.get("kind", "event")), _e(", ".join(f"{k}={v}" for k, v in ev.items()
                                                           if k not in ("kind", "time")))])
    return rows


def _training_behavior(run: RunSeries) -> str:
    if not run.behavior:
        return ""
    rows = []
    for name, pts in sorted(run.behavior.items()):
        step, value, n = pts[-1]
        lo, hi = wilson(round(value * n), n) if n else (math.nan, math.nan)
        rows.append([f"<code>{_e(name)}</code>", str(step), _pct(value), f"[{_pct(lo)}, {_pct(hi)}]", str(n)])
    return ("<h3>Last training-time probe figures</h3><p class='muted'>On the small probe subset the time budget "
            "allowed; interval: Wilson 95% from the value and n (for the mean scores an approximation).</p>"
            + _table(["metric", "step", "value", "95% CI", "n"], rows))


def _eval_section(ev: dict[str, Any], path: Path | None) -> str:
    out = [f"<h2>Held-out evaluation (<code>{_e(path.name if path else 'eval.json')}</code>)</h2>",
           f"<p class='muted'>Model: <code>{_e(ev.get('checkpoint'))}</code>; backend {_e(ev.get('backend', 'local'))}"
           f"; step {_e(ev.get('step'))}; split {_e(ev.get('split'))}.</p>"]
    lm = [("loss", "loss (nats/token)", "{:.4f}"), ("perplexity", "perplexity", "{:.3f}"),
          ("token_accuracy", "token accuracy", None), ("bits_per_byte", "bits per byte", "{:.4f}"),
          ("target_tokens", "target tokens", "{:,}")]
    rows = [[label, _pct(ev[k]) if spec is None else _fmt(ev[k], spec)] for k, label, spec in lm if k in ev]
    if rows:
        out.append(_table(["language modelling", "value"], rows))
    beh = ev.get("behavior") or {}
    figures = beh.get("figures") or {}
    if figures:
        info = ev.get("probes") or {}
        out.append(f"<p class='muted'>Behavioral probes: {_e(info.get('selected'))} of {_e(info.get('available'))} "
                   f"from <code>{_e(info.get('source'))}</code> (prompts seen in training dropped: "
                   f"{_e(info.get('seen_in_train_dropped'))}). Intervals are 95%: Wilson for proportions, "
                   f"Jeffreys-posterior draws for means of several rates.</p>")
        frows = []
        for key, meaning in EVAL_ROWS:
            f = figures.get(key)
            if f:
                frows.append([f"<code>{_e(key)}</code>", _pct(f["value"]), f"[{_pct(f['low'])}, {_pct(f['high'])}]",
                              str(f["n"]), _e(meaning)])
        out.append(_table(["metric", "value", "95% CI", "n", "what it counts"], frows))
        cm = beh.get("confusion")
        if cm and any(any(r) for r in cm.get("counts", [])):
            crow = [[f"<code>{_e(label)}</code>", *[str(c) if c else "·" for c in row]]
                    for label, row in zip(cm["labels"], cm["counts"])]
            out.append("<h3>Perspective confusion (rows: asked; columns: first marker written)</h3>"
                       + _table(["asked \\ answered", *cm["columns"]], crow, "cm"))
    elif (ev.get("probes") or {}).get("skipped"):
        out.append(f"<p>Behavioral probes skipped: {_e(ev['probes']['skipped'])}</p>")
    return "\n".join(out)


def render_html(run: RunSeries, plots: dict[str, Path], evaluation: dict[str, Any] | None = None,
                eval_path: Path | None = None, tensorboard: Path | None = None) -> str:
    """The one-page summary (self-contained: CSS inline, PNGs as data URIs)."""
    title = "Codette training report"
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{title}</h1>",
             "<p class='muted'>Metrics log: " + ", ".join(f"<code>{_e(f)}</code>" for f in run.files)
             + f"<br>Generated {_e(time.strftime('%Y-%m-%d %H:%M:%S %Z'))} by <code>codette report</code>.</p>",
             "<h2>Run</h2>", _table(["", "value"], _summary_rows(run))]
    if plots:
        parts.append("<h2>Curves</h2><div class='grid'>")
        parts += [_img(p, PLOT_TITLES.get(k, k)) for k, p in plots.items()]
        parts.append("</div>")
    parts.append(_training_behavior(run))
    if evaluation:
        parts.append(_eval_section(evaluation, eval_path))
    if tensorboard is not None:
        parts.append(f"<p>TensorBoard events: <code>tensorboard --logdir {_e(tensorboard)}</code></p>")
    parts.append("<p class='note'><code>consciousness_score</code> is the mean of the identity, self-reference and "
                 "intentionality scores: the share of answers about Codette itself that state its facts correctly. "
                 "It is a behavioral measure, <b>not</b> a claim that the model is conscious. Definitions of every "
                 "metric: <code>docs/EVALUATION.md</code>.</p>")
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)
