"""The one adapter between the data and the behavioral evaluation: held-out records -> probes.

Why one module: the data generator (categories, tools, perspectives, question wordings) keeps
growing. Everything the metrics need from a record is read here, from the record's own fields
(``category``, ``perspective``, ``aspect``, ``question_type``, ``tool``, ``tool_arguments``,
``expected_result``, ``setup``) and from :mod:`codette.persona` and :mod:`codette.tooltable`, so a new
tool or perspective in the data becomes a probe without touching the metrics.

A probe is the conversation up to (not including) the assistant turn the model must write, plus
what the scorer needs. Probes come from a held-out split, whose (template, slots) combinations never
occur in training: ``test`` for ``codette eval`` (never used to pick a checkpoint), ``val`` for the
probes during training (which can select ``model_best.pt``); on top of that,
:func:`drop_seen_prompts` removes any probe whose prompt (the user/assistant/tool turns before the
answer, system prompt ignored) occurs verbatim in the training split, so no probe can be answered by
recalling a training conversation's prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from codette.data.split import HELD_OUT
from codette.errors import CodetteError
from codette.jsonl import read_jsonl
from codette.persona import PERSPECTIVE_MARK, PERSPECTIVES
from codette.tooltable import TOOL_NAMES

log = logging.getLogger(__name__)

KINDS = ("tool", "no_tool", "identity", "perspective")
ASPECTS = ("identity", "self_reference", "intentionality")
DEFAULT_PROBES_PER_KIND = 40  # ~2-4 CPU minutes for the quickstart model; None = every probe

@dataclass(frozen=True)
class Probe:
    """One prompt with what its scorer needs.

    ``kind``: ``tool`` (must call ``meta['tool']``), ``no_tool`` (must answer without a call),
    ``identity`` (consciousness aspect in ``meta['aspect']``, question type in ``meta['qtype']``),
    ``perspective`` (must answer as ``meta['perspective']``). ``reference`` is the data's answer
    (for tool probes: the final answer after the tool result).
    """

    id: str
    kind: str
    messages: list[dict]
    reference: str
    tools: list[dict] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str:
        """The stratum used for balanced subsets and per-group tables."""
        return str(self.meta.get("tool") or self.meta.get("aspect") or self.meta.get("perspective") or self.kind)

    def prompt_text(self) -> str:
        """What the user said (all user turns), used to keep echoed prompt words out of scores."""
        return "\n".join(m.get("content") or "" for m in self.messages if m.get("role") == "user")


def _said(messages: Iterable[dict]) -> str:
    """A prompt's identity for the seen-in-training check: every turn but the system prompt."""
    return json.dumps([{k: m.get(k) for k in ("role", "content", "tool_calls")} for m in messages
                       if m.get("role") != "system"], ensure_ascii=False, sort_keys=True)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=12).digest()


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    if not path.is_file():
        raise CodetteError(f"no probe source at {path}; run `codette data` (the held-out splits are the probe sets)")
    for lineno, rec in read_jsonl(path):
        if not isinstance(rec, dict):
            raise CodetteError(f"{path}:{lineno}: expected a JSON object")
        yield lineno, rec


def _need(rec: dict, key: str, where: str) -> Any:
    if key not in rec:
        raise CodetteError(f"{where}: field '{key}' is missing")
    return rec[key]


def _assistant_indices(messages: list[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def probe_from_record(rec: dict, where: str) -> Probe | None:
    """The probe a held-out record gives, or None for records that are not behavioral (user documents, mixed)."""
    cat = rec.get("category")
    if cat not in ("tools", "consciousness", "perspectives"):
        return None
    messages = _need(rec, "messages", where)
    if not isinstance(messages, list) or not messages:
        raise CodetteError(f"{where}: field 'messages' must be a non-empty list")
    turns = _assistant_indices(messages)
    if not turns:
        raise CodetteError(f"{where}: field 'messages' has no assistant turn")
    pid = f"{rec.get('template', cat)}@{where.rsplit(':', 1)[-1]}"
    if cat == "tools" and rec.get("chain"):  # several calls: scored by the natural set's multi-turn items
        return None
    if cat == "tools":
        tool = _need(rec, "tool", where)
        if tool is None:
            i = turns[-1]
            return Probe(pid, "no_tool", messages[:i], messages[i].get("content") or "", rec.get("tools"),
                         {"scenario": rec.get("scenario")})
        if tool not in TOOL_NAMES:
            raise CodetteError(f"{where}: field 'tool' names {tool!r}, which is not one of tooltable.TOOL_NAMES")
        first, last = turns[0], turns[-1]
        meta = {"tool": tool, "tool_arguments": _need(rec, "tool_arguments", where),
                "expected_result": _need(rec, "expected_result", where), "tool_ok": rec.get("tool_ok"),
                "setup": rec.get("setup") or {}, "scenario": rec.get("scenario")}
        return Probe(pid, "tool", messages[:first], messages[last].get("content") or "", rec.get("tools"), meta)
    i = turns[-1]
    reference = messages[i].get("content") or ""
    if cat == "perspectives":
        key = _need(rec, "perspective", where)
        if key not in PERSPECTIVES:
            raise CodetteError(f"{where}: field 'perspective' is {key!r}, not one of persona.PERSPECTIVES")
        return Probe(pid, "perspective", messages[:i], reference, None, {"perspective": key})
    aspect = _need(rec, "aspect", where)
    if aspect not in ASPECTS:
        raise CodetteError(f"{where}: field 'aspect' is {aspect!r}; expected one of {', '.join(ASPECTS)}")
    # The generator records which question it asked; a record without the field is typed 'unknown',
    # which the identity rubric scores conservatively.
    meta: dict[str, Any] = {"aspect": aspect, "qtype": rec.get("question_type") or "unknown"}
    if rec.get("template") == "reflection" or meta["qtype"] == "reflection":
        meta["qtype"] = "reflection"
        meta["used_perspective"] = _previous_perspective(messages[:i])
    return Probe(pid, "identity", messages[:i], reference, None, meta)


def _previous_perspective(messages: list[dict]) -> str | None:
    """The perspective key the previous assistant turn was marked with (for reflection questions)."""
    for m in reversed(messages):
        text = m.get("content") or ""
        if m.get("role") == "assistant" and PERSPECTIVE_MARK in text:
            words = text.split(PERSPECTIVE_MARK, 1)[1].split()
            return words[0] if words and words[0] in PERSPECTIVES else None
    return None


def load_probes(path: Path | str) -> list[Probe]:
    """Every probe of a held-out JSONL file (records that are not probes are skipped)."""
    path = Path(path)
    probes = []
    for lineno, rec in _read_jsonl(path):
        p = probe_from_record(rec, f"{path}:{lineno}")
        if p is not None:
            probes.append(p)
    return probes


def drop_seen_prompts(probes: list[Probe], train_path: Path | str | None) -> tuple[list[Probe], int]:
    """Probes whose prompt never occurs in the training split, and how many were dropped."""
    if train_path is None or not Path(train_path).is_file():
        return probes, 0
    seen: set[bytes] = set()
    for _, rec in _read_jsonl(Path(train_path)):
        msgs = rec.get("messages")
        if not isinstance(msgs, list):
            continue
        for i in _assistant_indices(msgs):
            seen.add(_digest(_said(msgs[:i])))
    kept = [p for p in probes if _digest(_said(p.messages)) not in seen]
    return kept, len(probes) - len(kept)


def _order(pid: str) -> int:
    return int.from_bytes(hashlib.sha256(pid.encode()).digest()[:8], "big")


PerKind = Union[int, None, Mapping[str, Union[int, None]]]  # a limit for every kind, or per kind (absent: none)


def select(probes: list[Probe], per_kind: PerKind) -> list[Probe]:
    """A deterministic, balanced subset: at most ``per_kind`` probes of each kind, round-robin over groups.

    ``per_kind`` is one limit for every kind (None: all of them) or a limit per kind, where a kind it does
    not name gets none (``{"tool": None}``: every tool probe and nothing else).

    Round-robin over groups (tools, aspects, perspectives) in a fixed hash order means a subset of 10
    covers 10 different tools rather than whichever came first, and a smaller subset is always a
    prefix of a larger one (so training-time figures at different budgets stay comparable).
    """
    out: list[Probe] = []
    for kind in KINDS:
        limit = per_kind.get(kind, 0) if isinstance(per_kind, Mapping) else per_kind
        if limit == 0:
            continue
        of_kind = sorted((p for p in probes if p.kind == kind), key=lambda p: _order(p.id))
        groups: dict[str, list[Probe]] = {}
        for p in of_kind:
            groups.setdefault(p.group, []).append(p)
        order = sorted(groups, key=lambda g: _order(g))
        picked: list[Probe] = []
        depth = 0
        while len(picked) < len(of_kind) and (limit is None or len(picked) < limit):
            for g in order:
                if depth < len(groups[g]) and (limit is None or len(picked) < limit):
                    picked.append(groups[g][depth])
            depth += 1
        out += picked
    return out


def probe_set(data_dir: Path | str, per_kind: PerKind = None, unseen_only: bool = True,
              split: str = "test") -> tuple[list[Probe], dict]:
    """The probes of ``data_dir/<split>.jsonl`` (``train.jsonl`` for the unseen filter), with counts.

    ``split`` is ``test`` (the final evaluation) or ``val`` (probes during training, which may select
    the best checkpoint). Raises a CodetteError naming the file when nothing in it can be a probe.
    """
    if split not in HELD_OUT:
        raise CodetteError(f"probes come from a held-out split: val or test, not {split!r}")
    data_dir = Path(data_dir)
    source = data_dir / f"{split}.jsonl"
    probes = load_probes(source)
    total = len(probes)
    dropped = 0
    if unseen_only:
        probes, dropped = drop_seen_prompts(probes, data_dir / "train.jsonl")
    chosen = select(probes, per_kind)
    if not chosen:
        raise CodetteError(f"{source}: no behavioral probes (need records with category tools, consciousness or "
                           f"perspectives{' whose prompt is not in train.jsonl' if dropped else ''}); "
                           f"regenerate the data with `codette data`")
    info = {"source": str(source), "split": split, "available": total, "seen_in_train_dropped": dropped,
            "selected": len(chosen), "per_kind_limit": dict(per_kind) if isinstance(per_kind, Mapping) else per_kind,
            "by_kind": {k: sum(1 for p in chosen if p.kind == k) for k in KINDS}}
    return chosen, info
