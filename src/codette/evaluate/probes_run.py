"""Run the behavioral probes through any :class:`~codette.backends.ChatBackend` and summarise them.

The same code scores a PyTorch checkpoint, a model in the middle of training and an exported GGUF,
because all three only need ``chat(messages, tools, sampling) -> text``. Decoding is greedy, so a
figure changes only when the model does.

Headline figures (each with n and a 95% interval, see :mod:`codette.scoring.stats`):

* tool use: ``tool_json_valid``, ``tool_right_tool``, ``tool_args_valid``, ``tool_task_success``,
  ``tool_result_match`` (:mod:`~codette.evaluate.tool_metric`), ``tool_abstain`` on no-tool questions;
* identity: ``identity_score``, ``self_reference_score``, ``intentionality_score``
  (:mod:`~codette.scoring.identity`), and ``consciousness_score`` = the mean of those three
  (each aspect weighs a third). It measures whether the model states the facts about itself
  correctly; it is a behavioral measure, not a claim that the model is conscious;
* perspectives: ``perspective_marker_accuracy``, ``perspective_style_accuracy``,
  ``perspective_adherence`` (:mod:`~codette.scoring.perspective`) and confusion matrices;
* ``behavior_score`` = mean of ``tool_task_success``, ``consciousness_score`` and
  ``perspective_adherence`` (one number for checkpoint selection).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from codette.backends.base import ChatBackend, SamplingConfig
from codette.errors import CodetteError
from codette.evaluate import tool_metric as tm
from codette.evaluate.probes import Probe
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.scoring.stats import Figure, combined_proportions, proportion
from codette.scoring.tool_facts import key_facts

log = logging.getLogger(__name__)

ASPECT_METRIC = {"identity": "identity_score", "self_reference": "self_reference_score",
                 "intentionality": "intentionality_score"}
HEADLINE = ("tool_task_success", "consciousness_score", "perspective_adherence")


def _chat(backend: ChatBackend, messages: list[dict], tools: list[dict] | None, sampling: SamplingConfig) -> tuple[str, str | None]:
    """The reply, or "" and the reason when the backend refuses (e.g. the prompt overflows the context)."""
    try:
        return backend.chat(messages, tools=tools, sampling=sampling), None
    except CodetteError as exc:
        return "", str(exc)


class ToolWorkspace:
    """A scratch tool workspace rebuilt from each probe's recorded setup, made on first use (only tool
    probes need one): the model's call runs for real, as the data's reference call did."""

    def __init__(self) -> None:
        self._runner: Any = None

    def run(self, setup: dict, call: tm.ToolCall) -> str:
        from codette.tools import ToolResult
        from codette.tools.replay import ReplayWorkspace

        if self._runner is None:
            # The model's calls are untrusted: execute_python takes the per-call sandbox, not the generator's worker.
            self._runner = ReplayWorkspace(persistent_python=False)
        try:
            return self._runner.run(setup, call.name, call.arguments).content
        except CodetteError as exc:  # arguments the tool refuses become the error the model sees
            return ToolResult.failure(str(exc)).content

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
            self._runner = None


def run_probe(backend: ChatBackend, p: Probe, sampling: SamplingConfig, runner: ToolWorkspace) -> dict[str, Any]:
    """One probe: generate, (for tools) run the call and generate the final answer, score."""
    t0 = time.perf_counter()
    reply, err = _chat(backend, p.messages, p.tools, sampling)
    out: dict[str, Any] = {"id": p.id, "kind": p.kind, "group": p.group, "reply": reply}
    if err:
        out["backend_error"] = err
    if p.kind == "tool":
        s, call = tm.score_call(reply, p.meta["tool"])
        if call is not None:
            result = runner.run(p.meta.get("setup") or {}, call)
            convo = [*p.messages, {"role": "assistant", "content": None, "tool_calls": [call.to_openai()]},
                     {"role": "tool", "content": result}]
            final, err2 = _chat(backend, convo, p.tools, sampling)
            out.update(tool_result=result, final=final)
            if err2:
                out["backend_error"] = err2
            facts = key_facts(p.reference, p.meta["expected_result"], p.prompt_text())
            s = tm.score_final(s, final, facts, result, p.meta["expected_result"])
        out["score"] = s.as_dict()
    elif p.kind == "no_tool":
        out["score"] = {"abstained": int(tm.abstained(reply))}
    elif p.kind == "identity":
        out["aspect"] = p.meta["aspect"]
        out["score"] = idm.score_identity(reply, p.meta["qtype"], p.reference, p.meta.get("used_perspective")).as_dict()
    elif p.kind == "perspective":
        out["score"] = pm.score_perspective(reply, p.meta["perspective"], p.prompt_text()).as_dict()
    else:  # pragma: no cover - probes.KINDS is closed
        raise CodetteError(f"unknown probe kind {p.kind!r}")
    out["seconds"] = time.perf_counter() - t0
    return out


def run_probes(backend: ChatBackend, probes: list[Probe], max_new_tokens: int = 128,
               on_result: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Every probe through ``backend`` (greedy); ``on_result(i, result)`` reports progress."""
    if not probes:
        raise CodetteError("the probe set is empty: nothing to evaluate")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0)
    runner = ToolWorkspace()
    results = []
    try:
        for i, p in enumerate(probes):
            r = run_probe(backend, p, sampling, runner)
            results.append(r)
            if on_result:
                on_result(i, r)
    finally:
        runner.close()
    return results


def summarize(results: list[dict]) -> dict[str, Any]:
    """Figures, per-group tables and confusion matrices from :func:`run_probes` results."""
    by_kind: dict[str, list[dict]] = {}
    for r in results:
        by_kind.setdefault(r["kind"], []).append(r)
    tools = by_kind.get("tool", [])
    ident = by_kind.get("identity", [])
    persp = by_kind.get("perspective", [])
    fig: dict[str, Figure] = {}
    for key in ("json_valid", "right_tool", "args_valid", "result_match", "task_success"):
        fig[f"tool_{key}"] = proportion([r["score"][key] for r in tools])
    fig["tool_abstain"] = proportion([r["score"]["abstained"] for r in by_kind.get("no_tool", [])])
    aspects = {a: [r["score"]["score"] for r in ident if r["aspect"] == a] for a in ASPECT_METRIC}
    for a, name in ASPECT_METRIC.items():
        fig[name] = proportion(aspects[a])
    fig["consciousness_score"] = combined_proportions(aspects)
    fig["identity_marker_rate"] = proportion([r["score"]["marker"] for r in ident])
    fig["perspective_marker_accuracy"] = proportion([r["score"]["marker_ok"] for r in persp])
    fig["perspective_style_accuracy"] = proportion([r["score"]["style_ok"] for r in persp])
    fig["perspective_adherence"] = proportion([r["score"]["adherent"] for r in persp])
    groups = {"tool": [r["score"]["task_success"] for r in tools],
              "perspective": [r["score"]["adherent"] for r in persp],
              **{f"aspect:{a}": v for a, v in aspects.items()}}

    def behavior(m: dict[str, float]) -> float:
        parts = []
        if "tool" in m:
            parts.append(m["tool"])
        asp = [v for k, v in m.items() if k.startswith("aspect:")]
        if asp:
            parts.append(sum(asp) / len(asp))
        if "perspective" in m:
            parts.append(m["perspective"])
        return sum(parts) / len(parts)

    fig["behavior_score"] = combined_proportions(groups, behavior)
    by_tool: dict[str, dict[str, Any]] = {}
    for r in tools:
        row = by_tool.setdefault(r["group"], {"n": 0, "right_tool": 0, "args_valid": 0, "result_match": 0,
                                              "task_success": 0})
        row["n"] += 1
        for k in ("right_tool", "args_valid", "result_match", "task_success"):
            row[k] += r["score"][k]
    by_qtype: dict[str, dict[str, int]] = {}
    for r in ident:
        row = by_qtype.setdefault(r["score"]["qtype"], {"n": 0, "score": 0})
        row["n"] += 1
        row["score"] += r["score"]["score"]
    return {
        "figures": {k: v.as_dict() for k, v in fig.items()},
        "by_tool": dict(sorted(by_tool.items())),
        "by_question_type": dict(sorted(by_qtype.items())),
        "confusion": pm.confusion([(r["score"]["asked"], r["score"]["marker"]) for r in persp]),
        "style_confusion": pm.confusion([(r["score"]["asked"], r["score"]["style"]) for r in persp]),
        "backend_errors": sum(1 for r in results if r.get("backend_error")),
        "seconds": sum(r.get("seconds", 0.0) for r in results),
    }


def flat(summary: dict[str, Any]) -> dict[str, float]:
    """``{metric: value}`` for logs and checkpoint selection (``nan`` where a figure had no probes)."""
    return {k: v["value"] for k, v in summary["figures"].items()}
