"""Key facts: the words and numbers of a reference answer that only the tool's result could give.

The key facts of a reference final answer are its tokens that are grounded in the reference tool
result and are not in the user's prompt: words (lower-cased) that occur in the result's string
values, and numbers equal to a number in the result at the answer's precision (``3.14`` is grounded
by ``3.14159``; thousands separators ignored). Echoing the prompt therefore earns nothing, and a
wrong number fails. The tool-use ladder (:mod:`codette.evaluate.tool_metric`) asks a model's final
answer for every key fact; the natural set (:mod:`codette.evaluate.natural`) reads a result's
values with :func:`leaves` and :func:`tokens`.
"""

from __future__ import annotations

import json
import re
from typing import Any

# A number, or a word with inner punctuation ("v1.2", "#3", "a/b"); the punctuation a word ends with is
# cut off after the match. Asking the regex for a word that ends in [a-z0-9_] made it rescan the rest
# of "#-#-#-..." from every "#" (quadratic time on a model's answer or a tool's result).
_TOKEN = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?|[a-z#][a-z0-9_.#/:-]*")
_TRAILING = ".#/:-"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?$")


def tokens(text: str) -> list[str]:
    """Lower-cased word and number tokens; numbers lose thousands separators ("12,345" -> "12345")."""
    out = []
    for t in _TOKEN.findall(text.lower()):
        if t[:1].isdigit() or t[:1] == "-":
            out.append(t.replace(",", ""))
        elif len(word := t.rstrip(_TRAILING)) > 1 or word.isalpha():  # "#" alone is no word
            out.append(word)
    return out


def leaves(value: Any) -> list[str]:
    """The string and number values of a parsed tool result (keys and booleans are not facts)."""
    if isinstance(value, dict):
        return [x for v in value.values() for x in leaves(v)]
    if isinstance(value, list):
        return [x for v in value for x in leaves(v)]
    if isinstance(value, bool) or value is None:
        return []
    return [str(value)]


def _decimals(tok: str) -> int:
    return len(tok.split(".", 1)[1]) if "." in tok else 0


def _grounded_number(tok: str, result_numbers: list[float]) -> bool:
    x, d = float(tok), _decimals(tok)
    return any(abs(round(r, d) - x) < 10 ** (-d) / 2 + 1e-12 for r in result_numbers)


def key_facts(reference: str, result_content: str, prompt: str) -> list[str]:
    """The reference answer's tokens grounded in the tool result and absent from the prompt (see module doc)."""
    try:
        values = leaves(json.loads(result_content))
    except (json.JSONDecodeError, TypeError):
        values = [result_content or ""]
    result_tokens = {t for leaf in values for t in tokens(leaf)}
    result_numbers = [float(t) for t in result_tokens if _NUMBER.match(t)]
    prompt_tokens = set(tokens(prompt))
    facts: list[str] = []
    for t in tokens(reference):
        if t in prompt_tokens or t in facts:
            continue
        if _NUMBER.match(t):
            if _grounded_number(t, result_numbers):
                facts.append(t)
        elif t in result_tokens:
            facts.append(t)
    return facts


def fact_present(fact: str, answer_tokens: set[str]) -> bool:
    """Words match exactly; numbers match by value (``3.10`` equals ``3.1``)."""
    if _NUMBER.match(fact):
        x = float(fact)
        return any(_NUMBER.match(t) and abs(float(t) - x) < 1e-9 for t in answer_tokens)
    return fact in answer_tokens
