"""Limits checked before any parser runs: JSON nesting depth, text length, and a bounded JSON loader.

A hostile model or file can write ``"[" * 100000`` or a 5,000-digit integer: Python's parsers then
fail with RecursionError, ValueError or OverflowError from deep inside. :func:`loads` checks the
length and the nesting depth first (a linear scan that never recurses) and turns every parser error
into one :class:`JSONLimitError` with a short message.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from codette.jsonl import nesting_depth as json_depth  # the one linear-time depth scan (a neutral module)

MAX_JSON_DEPTH = 64


class JSONLimitError(ValueError):
    """JSON text that is malformed, too long, nested too deeply or holds an out-of-range number."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JSONLimitError(f"number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise JSONLimitError(f"{name} is not a JSON number")


def loads(text: str, max_chars: int, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` after checking length and depth; finite numbers only; one error type with a short message."""
    if len(text) > max_chars:
        raise JSONLimitError(f"JSON text is longer than {max_chars} characters")
    if json_depth(text, max_depth) > max_depth:
        raise JSONLimitError(f"JSON is nested more than {max_depth} levels deep")
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except JSONLimitError:
        raise
    except json.JSONDecodeError as exc:
        raise JSONLimitError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except (ValueError, RecursionError, OverflowError, MemoryError) as exc:
        # e.g. "Exceeds the limit (4300 digits) for integer string conversion"
        raise JSONLimitError(str(exc).split(";")[0][:120] or type(exc).__name__) from None


def value_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> int:
    """Nesting depth of an already-parsed value, walked iteratively (stops counting past ``max_depth``)."""
    best = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (Mapping, list, tuple)):
            best = max(best, depth)
            if depth > max_depth:
                return depth
            children = node.values() if isinstance(node, Mapping) else node
            stack.extend((c, depth + 1) for c in children)
    return best
