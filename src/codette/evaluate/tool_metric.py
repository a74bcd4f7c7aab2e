"""Tool-use scores: a ladder of four checks on the model's tool call and its final answer.

For a probe whose data calls tool ``T`` (scores are 0/1 and cumulative, so each is at most the one
before it):

1. ``json_valid``: the reply contains at least one ``<tool_call>`` block and
   :func:`codette.tools.parse_tool_calls` accepts every block (a JSON object with a string ``name``
   and an ``arguments`` object). A reply without a call scores 0.
2. ``right_tool``: 1 and the first call names ``T``.
3. ``args_valid``: 2 and the arguments validate against ``T``'s full JSON schema
   (:data:`codette.tooltable.SPECS`, ``additionalProperties: false``, required fields, types, limits).
4. ``task_success``: 3, the call is *run for real* on a workspace rebuilt from the record's setup
   (files, images, clock), its result is fed back as a ``tool`` message, and the model's final
   answer contains every **key fact**.

Key facts of a probe (:mod:`codette.scoring.tool_facts`) are the tokens of the data's reference final
answer that are grounded in the reference tool result and are not in the user's prompt. A probe
whose reference answer has no key fact (rare) needs the model's tool result to equal the reference
result instead.

Why here and not in :mod:`codette.scoring`: steps 1-3 read the reply with the tools' own call parser
and validate with jsonschema, which the text-only scorers do not import.

Beside the ladder, ``result_match`` (0/1) asks whether the arguments did what the request asked:
the call passed step 3 and, run for real on the rebuilt workspace, returned exactly the reference
call's result. Schema-valid arguments can still name the wrong file or compute the wrong
expression; this catches that. It is strict: several results echo their arguments (the calculator's
``expression``, the request's ``url``, the search ``query``), so for those tools it comes close to
"the arguments equal the reference call's".

No-tool probes (a question with tools available that needs none) score ``abstained``: the reply
contains no ``<tool_call>``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache

import jsonschema

from codette.scoring.tool_facts import fact_present, tokens
from codette.tools import ToolCall, ToolCallParseError, parse_tool_calls
from codette.tools.calls import TOOL_CALL_OPEN
from codette.tooltable import SPECS


@dataclass
class ToolScore:
    json_valid: int = 0
    right_tool: int = 0
    args_valid: int = 0
    task_success: int = 0
    result_match: int = 0  # not a rung: the real call returned the reference call's result
    called: str | None = None  # the first call's tool name
    error: str | None = None  # why the ladder stopped
    facts: list[str] = field(default_factory=list)
    facts_found: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@lru_cache(maxsize=None)
def _validator(name: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(SPECS[name].parameters)


def schema_error(name: str, arguments: dict) -> str | None:
    """None when ``arguments`` satisfy the full schema of tool ``name``, else the first problem."""
    if name not in SPECS:
        return f"unknown tool {name!r}"
    err = jsonschema.exceptions.best_match(_validator(name).iter_errors(arguments))
    if err is None:
        return None
    where = ".".join(str(p) for p in err.absolute_path) or "(arguments)"
    return f"{name}.{where}: {err.message}"


def score_call(reply: str, expected_tool: str) -> tuple[ToolScore, ToolCall | None]:
    """Steps 1-3 of the ladder for one reply; returns the score and the call to run (if step 3 passed)."""
    s = ToolScore()
    if TOOL_CALL_OPEN not in reply:
        s.error = "no tool call"
        return s, None
    try:
        calls = parse_tool_calls(reply)
    except ToolCallParseError as exc:
        s.error = f"unparseable: {exc}"
        return s, None
    if not calls:
        s.error = "no complete tool call"
        return s, None
    s.json_valid = 1
    call = calls[0]
    s.called = call.name
    if call.name != expected_tool:
        s.error = f"called {call.name!r}, expected {expected_tool!r}"
        return s, None
    s.right_tool = 1
    problem = schema_error(call.name, call.arguments)
    if problem is not None:
        s.error = f"schema: {problem}"
        return s, None
    s.args_valid = 1
    return s, call


def score_final(s: ToolScore, final: str, facts: list[str], model_result: str, expected_result: str) -> ToolScore:
    """Step 4: does the final answer carry every key fact (or, without facts, did the tool do the same)?"""
    have = set(tokens(final))
    s.facts = list(facts)
    s.facts_found = sum(fact_present(f, have) for f in facts)
    s.result_match = int(s.args_valid == 1 and model_result == expected_result)
    ok = s.facts_found == len(facts) if facts else model_result == expected_result
    s.task_success = int(s.args_valid == 1 and ok)
    if not ok:
        missing = [f for f in facts if not fact_present(f, have)]
        s.error = f"final answer lacks {missing[:5]}" if facts else "tool result differs from the reference"
    return s


def abstained(reply: str) -> bool:
    """A no-tool probe passes when the reply calls no tool."""
    return TOOL_CALL_OPEN not in reply
