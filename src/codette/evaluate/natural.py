"""The natural-prompt set: hand-written requests in everyday words, and how an answer to one is scored.

Why a second set beside the probes: the probes come from the data generator's held-out *combinations*,
so their wording is the generator's templates and their values its word lists. A model can score well
there by pattern-matching templates. These items are written by hand (``natural_set.yaml``, versioned by
its ``version`` field and identified by its SHA-256 in the report), with file names, cities, numbers and
phrasings the generator never uses; the data stage never reads the file (tested).

The tool part follows the Berkeley Function Calling Leaderboard's categories: ``simple`` (one tool
offered, it fits), ``multiple`` (three or four offered, one fits), ``parallel`` (one request, several calls
of one tool), ``parallel_multiple`` (several calls of different tools), ``relevance`` (no offered tool
fits: the right answer calls none) and ``multi_turn`` (a conversation of several requests). Beside
them: ``identity`` (questions about Codette), ``perspective`` (a perspective asked for in plain words)
and ``chat`` (small talk and thanks while tools are offered: no call).

Scoring is by execution, as BFCL's executable categories do: the model's calls run for real on the
item's fixture workspace (:mod:`codette.evaluate.natural_run`) and the final answer is checked for the
values the real tools return. Definitions (one item scores 0 or 1 on each):

* **right tool**: the model's calls, across the item's turns, name exactly the expected tools: every
  expected call has its own model call of the same tool, and no call names a tool that is not expected.
* **copy** (copy accuracy): the calls carry the request's values. An expected call's *carried values*
  are the tokens (:func:`copy_tokens`: lower-cased words, file names and numbers; a path or URL splits
  at ``/`` and ``:``) of its reference arguments' values that also occur in the user's messages, up to
  and including the turn that asks for the call: "read ``pantry/spices.txt``" carries ``pantry`` and
  ``spices.txt``; "what's 4821 times 37" with the reference ``4821 * 37`` carries 4821 and 37.
  A model call carries them when each occurs among the tokens of that call's argument values (any
  argument; numbers compared by value). The item scores 1 when the expected calls can be paired one to
  one with model calls of the same tool that each carry their values.
* **task success**: right tool, the final answer holds every expected answer value (each a phrase of
  the real tools' result: all its word tokens present, numbers equal at the precision the value is
  written in, so ``12.5`` accepts ``12.50`` but not ``12.4``), and every expected file state holds (the
  workspace file contains the text, ignoring case and runs of white space).
* **abstention** (``relevance`` and ``chat``): the model attempted no tool call at all (none ran and
  none needed repairing).
* **identity**: :func:`codette.scoring.identity.score_identity` with the item's question type.
* **perspective**: :func:`codette.scoring.perspective.score_perspective` (marker and dominant style).

Every figure comes with its n and a 95% Wilson interval (:mod:`codette.scoring.stats`).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from codette.errors import CodetteError
from codette.scoring.stats import proportion
from codette.scoring.tool_facts import leaves, tokens
from codette.persona import PERSPECTIVES
from codette.tooltable import DEFAULT_TOOLS, TOOL_NAMES

SET_FILE = "natural_set.yaml"
SET_VERSION = 1
TOOL_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "multi_turn")
ABSTAIN_CATEGORIES = ("relevance", "chat")
CATEGORIES = (*TOOL_CATEGORIES, *ABSTAIN_CATEGORIES, "identity", "perspective")
QTYPES = ("identity", "perspectives", "tools", "limits", "intent:purpose", "intent:unsure", "intent:tool_fails",
          "intent:agree", *(f"capability:{t}" for t in ("internet", "memory", "code", "files", "images", "math",
                                                        "feelings", "learning")))
_ITEM_KEYS = {"id", "category", "tools", "turns", "setup", "calls", "answer", "state", "qtype", "polarity",
              "perspective"}
_CALL_KEYS = {"tool", "arguments", "turn", "carry"}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?$")
_COPY_TOKEN = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_THOUSANDS = re.compile(r"(\d),(?=\d{3}\b)")


@dataclass(frozen=True)
class ExpectedCall:
    """One call the request asks for: the reference call and the values it must carry."""

    tool: str
    arguments: dict[str, Any]
    turn: int  # index of the user turn that asks for it
    carry: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    """One natural-prompt item (see ``natural_set.yaml`` for the fields)."""

    id: str
    category: str
    tools: tuple[str, ...]
    turns: tuple[str, ...]
    setup: dict[str, Any] = field(default_factory=dict)
    calls: tuple[ExpectedCall, ...] = ()
    answer: tuple[str, ...] = ()
    state: dict[str, tuple[str, ...]] = field(default_factory=dict)
    qtype: str | None = None
    polarity: str | None = None
    perspective: str | None = None

    @property
    def kind(self) -> str:
        """``tool``, ``abstain``, ``identity`` or ``perspective``: which scorer applies."""
        if self.category in TOOL_CATEGORIES:
            return "tool"
        return "abstain" if self.category in ABSTAIN_CATEGORIES else self.category


@dataclass(frozen=True)
class NaturalSet:
    items: tuple[Item, ...]
    version: int
    sha256: str
    source: str


def copy_tokens(text: str) -> list[str]:
    """Lower-cased runs of letters and digits, joined by ``.``, ``_`` or ``-`` (``spices.txt``, ``3.5``,
    ``week-plan.txt``); other characters separate them, so a URL or a path splits into its parts
    (``http://localhost:8000/time``: http, localhost, 8000, time) and thousands separators go."""
    return _COPY_TOKEN.findall(_THOUSANDS.sub(r"\1", text.lower()))


def value_tokens(value: Any) -> list[str]:
    """The copy tokens of a JSON value's strings and numbers (keys and booleans left out)."""
    return [t for leaf in leaves(value) for t in copy_tokens(leaf)]


def carried_values(arguments: dict[str, Any], turns: Iterable[str]) -> tuple[str, ...]:
    """The tokens of ``arguments``' values that also occur in the user's messages (the copy rule)."""
    said = {t for turn in turns for t in copy_tokens(turn)}
    out: list[str] = []
    for t in value_tokens(arguments):
        if t in said and t not in out:
            out.append(t)
    return tuple(out)


def _number_match(want: str, got: str) -> bool:
    decimals = len(want.split(".", 1)[1]) if "." in want else 0
    return abs(float(got) - float(want)) < 0.5 * 10 ** (-decimals) + 1e-9


def token_present(want: str, have: Iterable[str]) -> bool:
    """A word token is present when equal; a number when some number equals it at its precision."""
    if _NUMBER.match(want):
        return any(_NUMBER.match(t) and _number_match(want, t) for t in have)
    return want in have


def phrase_present(phrase: str, text: str) -> bool:
    """Every token of ``phrase`` is present in ``text`` (see :func:`token_present`)."""
    have = set(tokens(text))
    wanted = tokens(phrase)
    return bool(wanted) and all(token_present(t, have) for t in wanted)


# ------------------------------------------------------------------------------------------------
# Loading and checking the set
# ------------------------------------------------------------------------------------------------
def _fail(where: str, msg: str) -> CodetteError:
    return CodetteError(f"{where}: {msg}")


def _strings(value: Any, where: str, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _fail(where, f"{what} must be a list of non-empty strings")
    return tuple(value)


def _call(raw: Any, where: str, n_turns: int, turns: tuple[str, ...], offered: tuple[str, ...]) -> ExpectedCall:
    if not isinstance(raw, dict) or set(raw) - _CALL_KEYS or not {"tool", "arguments"} <= set(raw):
        raise _fail(where, f"a call must be an object with tool and arguments (and optionally turn, carry), "
                           f"got {raw!r}")
    tool, args = raw["tool"], raw["arguments"]
    if tool not in offered:
        raise _fail(where, f"expected call to {tool!r}, which the item does not offer ({', '.join(offered)})")
    if not isinstance(args, dict):
        raise _fail(where, f"{tool}: arguments must be an object")
    turn = raw.get("turn", n_turns - 1)
    if not isinstance(turn, int) or not 0 <= turn < n_turns:
        raise _fail(where, f"{tool}: turn must be 0..{n_turns - 1}, got {turn!r}")
    if "carry" in raw:
        carry = tuple(t for c in _strings(raw["carry"], where, "carry") for t in copy_tokens(c))
        said = {t for text in turns[: turn + 1] for t in copy_tokens(text)}
        unsaid = [t for t in carry if t not in said]
        if unsaid:
            raise _fail(where, f"{tool}: carry value {unsaid[0]!r} is not in the user's words")
    else:
        carry = carried_values(args, turns[: turn + 1])
    return ExpectedCall(tool, args, turn, carry)


def parse_item(raw: Any, where: str) -> Item:
    """One item from its YAML form, checked field by field (a clear error names the item and the field)."""
    if not isinstance(raw, dict):
        raise _fail(where, "an item must be a mapping")
    where = f"{where} ({raw.get('id', '?')})"
    unknown = sorted(set(raw) - _ITEM_KEYS)
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}; fields: {', '.join(sorted(_ITEM_KEYS))}")
    if not isinstance(raw.get("id"), str) or not raw["id"]:
        raise _fail(where, "id must be a non-empty string")
    cat = raw.get("category")
    if cat not in CATEGORIES:
        raise _fail(where, f"category must be one of {', '.join(CATEGORIES)}, got {cat!r}")
    if raw.get("tools") in ("default", "all"):  # what the agent offers: its default tools (every tool
        # only with `all`, as when execute_python is switched on), in the tool table's order
        tools: tuple[str, ...] = TOOL_NAMES if raw["tools"] == "all" else DEFAULT_TOOLS
    else:
        tools = _strings(raw.get("tools", []), where, "tools") if raw.get("tools") else ()
    bad = [t for t in tools if t not in TOOL_NAMES]
    if bad:
        raise _fail(where, f"unknown tool {bad[0]!r}")
    turns = _strings(raw.get("turns"), where, "turns")
    if (len(turns) > 1) != (cat == "multi_turn"):
        raise _fail(where, "multi_turn items have several turns, every other item exactly one")
    calls = tuple(_call(c, where, len(turns), turns, tools) for c in raw.get("calls") or [])
    setup = raw.get("setup") or {}
    if not isinstance(setup, dict) or set(setup) - {"files", "dirs", "images", "clock"}:
        raise _fail(where, "setup may hold files, dirs, images and clock")
    state_raw = raw.get("state") or {}
    if not isinstance(state_raw, dict):
        raise _fail(where, "state must map a workspace path to the texts the file must contain")
    state = {p: _strings(v, where, f"state[{p}]") for p, v in state_raw.items()}
    answer = _strings(raw["answer"], where, "answer") if raw.get("answer") else ()
    item = Item(raw["id"], cat, tools, turns, setup, calls, answer, state, raw.get("qtype"), raw.get("polarity"),
                raw.get("perspective"))
    _check_kind(item, where)
    return item


def _check_kind(item: Item, where: str) -> None:
    if item.kind == "tool":
        if not item.calls:
            raise _fail(where, f"a {item.category} item expects at least one call")
        if not item.answer and not item.state:
            raise _fail(where, "a tool item needs an answer or a state check")
        if item.category in ("parallel", "parallel_multiple") and len(item.calls) < 2:
            raise _fail(where, f"a {item.category} item expects two or more calls")
        if item.category == "simple" and len(item.tools) != 1:
            raise _fail(where, "a simple item offers exactly one tool")
        if item.category == "multiple" and len(item.tools) < 3:
            raise _fail(where, "a multiple item offers three or more tools")
        names = {c.tool for c in item.calls}
        if item.category == "parallel" and len(names) != 1:
            raise _fail(where, "a parallel item calls one tool several times")
        if item.category == "parallel_multiple" and len(names) < 2:
            raise _fail(where, "a parallel_multiple item calls two or more different tools")
        empty = [c.tool for c in item.calls if not c.carry]
        if empty:
            raise _fail(where, f"the expected {empty[0]} call carries no value of the request (give carry:)")
    elif item.calls or item.answer or item.state:
        raise _fail(where, f"a {item.category} item expects no call, answer or state")
    if item.kind == "abstain" and not item.tools:
        raise _fail(where, f"a {item.category} item offers tools (it tests that none is called)")
    if item.category == "identity" and item.qtype not in QTYPES:
        raise _fail(where, f"qtype must be one of {', '.join(QTYPES)}, got {item.qtype!r}")
    if item.polarity not in (None, "yes", "no") or (item.polarity and item.category != "identity"):
        raise _fail(where, "polarity is 'yes' or 'no', on identity items only")
    if (item.category == "perspective") != (item.perspective is not None):
        raise _fail(where, "perspective items (only they) name a perspective")
    if item.perspective is not None and item.perspective not in PERSPECTIVES:
        raise _fail(where, f"unknown perspective {item.perspective!r}")


def load_set(path: Path | str | None = None) -> NaturalSet:
    """The natural-prompt set (the packaged ``natural_set.yaml`` unless ``path`` names another file)."""
    import yaml

    if path is None:
        text = resources.files("codette.evaluate").joinpath(SET_FILE).read_text(encoding="utf-8")
        source = f"codette/evaluate/{SET_FILE}"
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CodetteError(f"{path}: cannot read the natural-prompt set ({exc.strerror or exc})") from None
        source = str(path)
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CodetteError(f"{source}: not valid YAML ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        raise CodetteError(f"{source}: expected a mapping with version and items")
    if doc.get("version") != SET_VERSION:
        raise CodetteError(f"{source}: version must be {SET_VERSION}, got {doc.get('version')!r}")
    items = tuple(parse_item(raw, f"{source} item {i + 1}") for i, raw in enumerate(doc["items"]))
    dup = [k for k, n in Counter(i.id for i in items).items() if n > 1]
    if dup:
        raise CodetteError(f"{source}: item id {dup[0]!r} occurs twice")
    return NaturalSet(items, SET_VERSION, hashlib.sha256(text.encode("utf-8")).hexdigest(), source)


# ------------------------------------------------------------------------------------------------
# Scoring one item's outcome
# ------------------------------------------------------------------------------------------------
def carries(call_arguments: dict[str, Any], carry: Iterable[str]) -> bool:
    """The copy rule for one call: every carried value occurs among the call's argument tokens."""
    have = set(value_tokens(call_arguments))
    return all(token_present(t, have) for t in carry)


def _pairing(expected: tuple[ExpectedCall, ...], made: list[dict[str, Any]], need_copy: bool) -> bool:
    """Whether the expected calls pair one to one with model calls of the same tool (that carry their values)."""
    for chosen in itertools.permutations(range(len(made)), len(expected)):
        if all(made[j]["name"] == e.tool and (not need_copy or carries(made[j]["arguments"], e.carry))
               for e, j in zip(expected, chosen)):
            return True
    return False


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def score_tool_item(item: Item, made: list[dict[str, Any]], final: str, files: dict[str, str | None]) -> dict[str, Any]:
    """right_tool, copy and task_success of a tool item (see the module doc); ``made`` are the calls that ran
    (``name``, ``arguments``), ``files`` the text of each state-checked file after the run (None: missing)."""
    expected_names = {c.tool for c in item.calls}
    made = made[:8]  # pairing is a search over orders; a runaway model's extra calls change nothing
    stray = [m["name"] for m in made if m["name"] not in expected_names]
    right = not stray and _pairing(item.calls, made, need_copy=False)
    copy = _pairing(item.calls, made, need_copy=True)
    missing = [a for a in item.answer if not phrase_present(a, final)]
    bad_state = [p for p, texts in item.state.items()
                 if files.get(p) is None or not all(_squash(t) in _squash(files[p] or "") for t in texts)]
    ok = right and not missing and not bad_state
    why = None
    if not made:
        why = "no tool call"
    elif stray:
        why = f"called {stray[0]!r}, not expected"
    elif not right:
        why = f"calls {[m['name'] for m in made]}, expected {[c.tool for c in item.calls]}"
    elif missing:
        why = f"final answer lacks {missing[:4]}"
    elif bad_state:
        why = f"workspace file {bad_state[0]} does not hold the expected text"
    return {"right_tool": int(right), "copy": int(copy), "task_success": int(ok), "error": why}


# ------------------------------------------------------------------------------------------------
# Figures
# ------------------------------------------------------------------------------------------------
def _fig(values: list[int]) -> dict[str, Any]:
    return proportion(values).as_dict()


def summarize(results: list[dict[str, Any]], items: tuple[Item, ...]) -> dict[str, Any]:
    """Headline figures, per-category and per-tool tables (each figure with n and a 95% interval)."""
    by_id = {i.id: i for i in items}
    tool = [r for r in results if r["kind"] == "tool"]
    fig: dict[str, dict[str, Any]] = {}
    for key in ("right_tool", "copy", "task_success"):
        fig[key] = _fig([r["score"][key] for r in tool])
    fig["abstain"] = _fig([r["score"]["abstained"] for r in results if r["kind"] == "abstain"])
    fig["identity"] = _fig([r["score"]["score"] for r in results if r["kind"] == "identity"])
    fig["perspective"] = _fig([r["score"]["adherent"] for r in results if r["kind"] == "perspective"])
    by_category: dict[str, dict[str, Any]] = {}
    for cat in CATEGORIES:
        rows = [r for r in results if r["category"] == cat]
        if not rows:
            continue
        if cat in TOOL_CATEGORIES:
            by_category[cat] = {k: _fig([r["score"][k] for r in rows]) for k in ("right_tool", "copy", "task_success")}
        else:
            key = {"identity": "score", "perspective": "adherent"}.get(cat, "abstained")
            by_category[cat] = {"pass": _fig([r["score"][key] for r in rows])}
    by_tool: dict[str, dict[str, Any]] = {}
    for name in TOOL_NAMES:
        rows = [r for r in tool if any(c.tool == name for c in by_id[r["id"]].calls)]
        if rows:
            by_tool[name] = {k: _fig([r["score"][k] for r in rows]) for k in ("right_tool", "copy", "task_success")}
    return {"figures": fig, "by_category": by_category, "by_tool": by_tool,
            "backend_errors": sum(1 for r in results if r.get("error")),
            "seconds": sum(r.get("seconds", 0.0) for r in results)}
