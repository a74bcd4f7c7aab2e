"""The copy monitor: does the model copy the user's values into its tool calls? One forward pass a record.

A cheap training-time signal for the slowest behavior to appear (docs/TRAINING_GUIDE.md, "Copying the
user's values"): no generation, only the validation conversations as they are, teacher-forced.

Definitions (also in docs/EVALUATION.md, "The copy monitor"):

- a **copy value** is a leaf argument of a tool call in an assistant turn (a string or a number; not a
  boolean or null) whose text, as the call writes it, has a letter or digit and occurs verbatim in a user turn
  before the call, not inside a longer word (the characters either side are not letters, digits or ``_``):
  a value the model must copy rather than infer;
- its **target positions** are the tokens of the rendered conversation that overlap the value's characters
  inside the call (a JSON string's characters between its quotes, escapes included; a number's digits);
- with the conversation as input, a value is **copied** when at each target position the model's argmax at
  the position before is that token;
- ``copy_exact`` = copied values / values checked (``copy_n``); ``copy_token_acc`` = argmax-correct target
  tokens / target tokens (``copy_tokens``);
- ``copy_unseen`` = checked values whose text (raw or JSON-escaped) occurs nowhere in ``train.jsonl``, so
  no training conversation holds them; ``copy_exact_unseen`` = ``copy_exact`` over those values only: copying,
  not memory.

A copy document (a text record of ``codette.data.copydocs``, the copy stage's data) is scored the same
way: each ``<tool_call>`` block's values that its request (the text since the blank line before it) holds,
in the document's text as it is (without the BOS token packing puts before it).

A conversation longer than the model's context is read in the window of ``context`` tokens that ends at its
last value; a value is checked only when its source in the user's turn lies inside that window (the model
can see what it must copy). The records are the first ``records`` of ``val.jsonl`` (file order) with a value
to check. The text part here needs no torch; :func:`score_copies` runs a model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codette.jsonl import read_jsonl
from codette.tokenizer.chat_template import render

if TYPE_CHECKING:
    import torch

    from codette.tokenizer import CodetteTokenizer

log = logging.getLogger(__name__)

DEFAULT_TRAIN_SCAN_BYTES = 256 << 20  # the unseen check reads at most this much of train.jsonl


@dataclass(frozen=True)
class CopyValue:
    """One value a call must copy: its text as the call writes it, where it stands, and where the user said it.

    ``start``/``end`` are character offsets of the value inside the call in the rendered conversation;
    ``source`` is the offset of its last occurrence in a user turn before the call; ``raw`` is the value as
    the user wrote it (``text`` is JSON-escaped where the call escapes it).
    """

    tool: str
    argument: str
    text: str
    raw: str
    start: int
    end: int
    source: int


@dataclass
class CopyCase:
    """One record ready to score: the window's token ids and, per value, its target positions in the window."""

    ids: list[int]
    values: list[CopyValue]
    targets: list[list[int]]
    unseen: list[bool] = field(default_factory=list)


# ---- the pure text part ---------------------------------------------------------------------------------
def _dump(value: Any, out: list[str], pos: int, path: str, leaves: list[tuple[str, int, int, Any]]) -> int:
    """Append ``value`` as ``json.dumps(ensure_ascii=False)`` writes it, noting each leaf's span; the new offset."""
    if isinstance(value, dict):
        out.append("{")
        pos += 1
        for i, (k, v) in enumerate(value.items()):
            head = (", " if i else "") + json.dumps(str(k), ensure_ascii=False) + ": "
            out.append(head)
            pos = _dump(v, out, pos + len(head), f"{path}.{k}" if path else str(k), leaves)
        out.append("}")
        return pos + 1
    if isinstance(value, list):
        out.append("[")
        pos += 1
        for i, v in enumerate(value):
            if i:
                out.append(", ")
                pos += 2
            pos = _dump(v, out, pos, f"{path}[{i}]", leaves)
        out.append("]")
        return pos + 1
    text = json.dumps(value, ensure_ascii=False)
    out.append(text)
    if isinstance(value, str):
        leaves.append((path, pos + 1, pos + len(text) - 1, value))
    elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        leaves.append((path, pos, pos + len(text), value))
    return pos + len(text)


def argument_spans(arguments: dict) -> tuple[str, list[tuple[str, int, int, Any]]]:
    """The arguments as the chat template writes them (``tojson``) and each leaf value's (path, start, end, value)."""
    out: list[str] = []
    leaves: list[tuple[str, int, int, Any]] = []
    _dump(arguments, out, 0, "", leaves)
    return "".join(out), leaves


def _occurs(raw: str, text: str) -> int:
    """Offset of the last occurrence of ``raw`` in ``text`` not inside a longer word, or -1."""
    last = -1
    for m in re.finditer(r"(?<!\w)" + re.escape(raw) + r"(?!\w)", text):
        last = m.start()
    return last


def _function(call: dict) -> tuple[str, Any]:
    f = call.get("function", call) if isinstance(call, dict) else {}
    return str(f.get("name", "")), f.get("arguments")


def copy_values(messages: list[dict], tools: list[dict] | None = None) -> tuple[str, list[CopyValue]]:
    """The rendered conversation (the chat template's text, as packing tokenizes it) and its copy values."""
    full = render(messages, tools)
    values: list[CopyValue] = []
    users: list[tuple[int, str]] = []  # (offset of the content in ``full``, content) of the user turns so far
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            start = len(render(messages[:i], tools)) + len("<|im_start|>user\n")
            content = m.get("content") or ""
            if full[start:start + len(content)] == content:
                users.append((start, content))
            continue
        if m.get("role") != "assistant" or not m.get("tool_calls") or not users:
            continue
        cursor = len(render(messages[:i], tools, add_generation_prompt=True))
        for call in m["tool_calls"]:
            name, args = _function(call)
            written = args if isinstance(args, str) else json.dumps(args, ensure_ascii=False)
            if isinstance(args, str):  # the template writes a string as it is: located only in the usual form
                with contextlib.suppress(json.JSONDecodeError):
                    args = json.loads(args)
            if not isinstance(args, dict):
                continue
            text, leaves = argument_spans(args)
            if text != written:
                continue  # written otherwise (other spacing, a NaN): not located, not checked
            head = f'<tool_call>\n{{"name": "{name}", "arguments": '
            at = full.find(head + text, cursor)
            if at < 0:
                continue
            base = at + len(head)
            cursor = base + len(text)
            values += _located(name, leaves, full, base, lambda raw: max(
                (off + k for off, content in users if (k := _occurs(raw, content)) >= 0), default=-1))
    return full, values


def _located(name: str, leaves: list[tuple[str, int, int, Any]], text: str, base: int,
             source_of: Callable[[str], int]) -> list[CopyValue]:
    """The call's leaves (offsets from ``base`` in ``text``) that have a letter or digit and whose text
    ``source_of`` finds where the user wrote it (an offset in ``text``, or -1)."""
    found = []
    for path, a, b, value in leaves:
        raw = value if isinstance(value, str) else text[base + a:base + b]
        source = source_of(raw) if any(c.isalnum() for c in raw) else -1
        if source >= 0:
            found.append(CopyValue(name, path, text[base + a:base + b], raw, base + a, base + b, source))
    return found


# One call of a copy document: the block as format_tool_call writes it, its JSON on one line.
_TEXT_CALL = re.compile(r"<tool_call>\n(\{[^\n]*\})\n</tool_call>")


def text_copy_values(text: str) -> list[CopyValue]:
    """The copy values of a copy document: per call block, the argument values its request wrote."""
    values: list[CopyValue] = []
    for m in _TEXT_CALL.finditer(text):
        with contextlib.suppress(json.JSONDecodeError):
            call = json.loads(m.group(1))
            name, args = _function(call)
            if not isinstance(args, dict):
                continue
            written, leaves = argument_spans(args)
            head = f'{{"name": {json.dumps(name, ensure_ascii=False)}, "arguments": '
            if not m.group(1).startswith(head + written):
                continue  # written otherwise: not located, not checked
            base = m.start(1) + len(head)
            blank = text.rfind("\n\n", 0, m.start())  # the request starts after the blank line before the call
            start = blank + 2 if blank >= 0 else 0
            request = text[start:m.start()]
            values += _located(name, leaves, text, base,
                               lambda raw: start + k if (k := _occurs(raw, request)) >= 0 else -1)
    return values


def target_positions(offsets: Sequence[tuple[int, int]], start: int, end: int) -> list[int]:
    """Indices of the tokens whose characters overlap ``[start, end)``; one with empty offsets counts as the
    character at its offset. Token 0 has no position before it to predict it."""
    return [k for k, (a, b) in enumerate(offsets) if a < end and max(b, a + 1) > start and k > 0]


def _token_at(offsets: Sequence[tuple[int, int]], char: int) -> int:
    return next((k for k, (_a, b) in enumerate(offsets) if b > char), len(offsets))


def copy_case(messages: list[dict], tools: list[dict] | None, tokenizer: CodetteTokenizer,
              context: int) -> CopyCase | None:
    """The record's window and its checkable values, or None when it has none (see the module's definitions)."""
    text, values = copy_values(messages, tools)
    return _case(text, values, tokenizer, context)


def text_copy_case(text: str, tokenizer: CodetteTokenizer, context: int) -> CopyCase | None:
    """:func:`copy_case` for a copy document."""
    return _case(text, text_copy_values(text), tokenizer, context)


def _case(text: str, values: list[CopyValue], tokenizer: CodetteTokenizer, context: int) -> CopyCase | None:
    if not values:
        return None
    ids, offsets = tokenizer.encode_with_offsets(text)
    found = [(v, target_positions(offsets, v.start, v.end), _token_at(offsets, v.source)) for v in values]
    found = [(v, t, s) for v, t, s in found if t]
    if not found:
        return None
    stop = max(t[-1] for _, t, _ in found) + 1
    first = max(0, stop - context)
    kept = [(v, [k - first for k in t]) for v, t, s in found if s >= first and t[0] > first]
    if not kept:
        return None
    return CopyCase(list(ids[first:stop]), [v for v, _ in kept], [t for _, t in kept])


def score_case(predicted: Sequence[int], ids: Sequence[int], targets: list[list[int]]) -> list[list[bool]]:
    """Per value, per target position ``k``: is the argmax at ``k - 1`` (``predicted[k - 1]``) the token ``ids[k]``?"""
    return [[int(predicted[k - 1]) == int(ids[k]) for k in t] for t in targets]


@dataclass
class CopyTally:
    """Running counts behind the copy figures (definitions in the module docstring)."""

    values: int = 0
    copied: int = 0
    tokens: int = 0
    tokens_right: int = 0
    unseen: int = 0
    unseen_copied: int = 0

    def add(self, hits: list[list[bool]], unseen: Sequence[bool]) -> None:
        for per_token, new in zip(hits, unseen):
            ok = all(per_token)
            self.values += 1
            self.copied += ok
            self.tokens += len(per_token)
            self.tokens_right += sum(per_token)
            self.unseen += new
            self.unseen_copied += ok and new

    def figures(self) -> dict[str, float | int]:
        """The eval record's ``copy_*`` fields (empty when nothing was checked)."""
        if not self.values:
            return {}
        out: dict[str, float | int] = {"copy_exact": self.copied / self.values,
                                       "copy_token_acc": self.tokens_right / self.tokens,
                                       "copy_n": self.values, "copy_tokens": self.tokens, "copy_unseen": self.unseen}
        if self.unseen:
            out["copy_exact_unseen"] = self.unseen_copied / self.unseen
        return out


def unseen_in(texts: Sequence[str], train_path: Path, max_bytes: int = DEFAULT_TRAIN_SCAN_BYTES,
              chunk: int = 8 << 20) -> tuple[list[bool], int]:
    """Per text: True when neither it nor its JSON-escaped form occurs in the first ``max_bytes`` of
    ``train_path``; and the bytes read. Without the file nothing can be shown unseen: every text counts as seen."""
    if not train_path.is_file():
        return [False] * len(texts), 0
    forms = [{t.encode(), json.dumps(t, ensure_ascii=False)[1:-1].encode(), json.dumps(t)[1:-1].encode()}
             for t in texts]
    missing = set(range(len(texts)))
    longest = max((len(f) for fs in forms for f in fs), default=1)
    read, tail = 0, b""
    with open(train_path, "rb") as fh:
        while missing and read < max_bytes:
            block = fh.read(min(chunk, max_bytes - read))
            if not block:
                break
            read += len(block)
            window = tail + block
            missing -= {i for i in missing if any(f in window for f in forms[i])}
            tail = window[-(longest - 1):] if longest > 1 else b""
    return [i in missing for i in range(len(texts))], read


def _records(path: Path) -> Iterator[dict]:
    """Conversations, and text records that hold tool calls (copy documents)."""
    for _, rec in read_jsonl(path):
        if isinstance(rec, dict) and (isinstance(rec.get("messages"), list)
                                      or (isinstance(rec.get("text"), str) and "<tool_call>" in rec["text"])):
            yield rec


def load_cases(data_dir: Path, tokenizer: CodetteTokenizer, records: int, context: int,
               max_train_bytes: int = DEFAULT_TRAIN_SCAN_BYTES) -> list[CopyCase]:
    """The first ``records`` cases of ``data_dir/val.jsonl``, each value marked unseen or not in ``train.jsonl``."""
    cases: list[CopyCase] = []
    val = Path(data_dir) / "val.jsonl"
    if records <= 0 or not val.is_file():
        return cases
    for rec in _records(val):
        case = (text_copy_case(rec["text"], tokenizer, context) if "messages" not in rec
                else copy_case(rec["messages"], rec.get("tools"), tokenizer, context))
        if case is not None:
            cases.append(case)
            if len(cases) >= records:
                break
    raws = [v.raw for c in cases for v in c.values]
    unseen, read = unseen_in(raws, Path(data_dir) / "train.jsonl", max_train_bytes)
    marks = iter(unseen)
    for c in cases:
        c.unseen = [next(marks) for _ in c.values]
    log.info("copy monitor: %d values in %d val records, %d of them not in train.jsonl (%.1f MB of it read)",
             len(raws), len(cases), sum(unseen), read / 1e6)
    return cases


# ---- the model ------------------------------------------------------------------------------------------
def score_copies(model: torch.nn.Module, cases: Sequence[CopyCase],
                 autocast: contextlib.AbstractContextManager | None = None) -> CopyTally:
    """Run each case's window through ``model`` (eval mode, no grad: no random number is drawn) and count."""
    import torch

    tally = CopyTally()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for case in cases:
                x = torch.tensor([case.ids], dtype=torch.long, device=device)
                with autocast or contextlib.nullcontext():
                    logits = model(x)
                predicted = logits[0].argmax(-1).tolist()
                tally.add(score_case(predicted, case.ids, case.targets), case.unseen)
    finally:
        model.train(was_training)
    return tally


class CopyMonitor:
    """The copy figures at each evaluation: the cases are read once, on first use, for the model's context."""

    def __init__(self, tokenizer: CodetteTokenizer, data_dir: Path, records: int, seq_len: int | None = None,
                 max_train_bytes: int = DEFAULT_TRAIN_SCAN_BYTES) -> None:
        self.tokenizer, self.data_dir, self.records = tokenizer, Path(data_dir), records
        self.seq_len, self.max_train_bytes = seq_len, max_train_bytes
        self.cases: list[CopyCase] | None = None

    def context(self, model: torch.nn.Module) -> int:
        """The window: the training sequence length, at most the model's context."""
        limit = int(getattr(getattr(model, "cfg", None), "max_seq_len", 0) or 0)
        sizes = [s for s in (self.seq_len, limit) if s]
        return min(sizes) if sizes else 1 << 30

    def __call__(self, model: torch.nn.Module, autocast: contextlib.AbstractContextManager | None = None
                 ) -> dict[str, float | int]:
        t0 = time.perf_counter()
        if self.cases is None:
            self.cases = load_cases(self.data_dir, self.tokenizer, self.records, self.context(model),
                                    self.max_train_bytes)
            if not self.cases:
                log.warning("copy monitor: no record of %s has a tool-call value its user wrote; it stays off",
                            self.data_dir / "val.jsonl")
        if not self.cases:
            return {}
        out = score_copies(model, self.cases, autocast).figures()
        out["copy_seconds"] = time.perf_counter() - t0
        return out
