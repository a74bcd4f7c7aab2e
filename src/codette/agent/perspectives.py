"""Asking for perspectives, and reading them back out of the answer.

The request is worded as the data's perspective conversations word it: one perspective as
"From the Newton perspective: ...", several as "Use the Newton and Da Vinci perspectives on this:
...", whose answers (the data's mixed-reasoning conversations) hold one ``<perspective> <key>``
part per perspective and end with a "Synthesis: ..." sentence. :func:`split_answer` returns those
parts and the synthesis as the model wrote them; a part the model left out is simply absent.
"""

from __future__ import annotations

import re
from typing import Any

from codette.errors import CodetteError
from codette.persona import PERSPECTIVE_MARK, PERSPECTIVES

_PART = re.compile(re.escape(PERSPECTIVE_MARK) + r"\s*([a-z_]+)\s*")
_SYNTHESIS = re.compile(r"(?:^|\n|(?<=[.!?])\s)Synthesis:", re.IGNORECASE)


def check(perspectives: list[str] | None) -> list[str]:
    """The asked perspective keys (display names accepted), or a clear error naming the unknown one."""
    if not perspectives:
        return []
    by_name = {v.lower(): k for k, v in PERSPECTIVES.items()} | {k.replace("_", " "): k for k in PERSPECTIVES}
    keys = []
    for p in perspectives:
        key = p if p in PERSPECTIVES else by_name.get(str(p).strip().lower().replace("-", " "))
        if key is None:
            raise CodetteError(f"unknown perspective {p!r}; choose from {', '.join(PERSPECTIVES)}")
        if key not in keys:
            keys.append(key)
    return keys


def _names(keys: list[str]) -> str:
    names = [PERSPECTIVES[k] for k in keys]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def request(prompt: str, keys: list[str]) -> str:
    """The user's message with the perspectives asked for."""
    if not keys:
        return prompt
    if len(keys) == 1:
        return f"From the {_names(keys)} perspective: {prompt}"
    return f"Use the {_names(keys)} perspectives on this: {prompt}"


def split_answer(text: str, keys: list[str]) -> dict[str, Any]:
    """``{"asked", "parts": [{"perspective", "text"}], "synthesis"}`` as found in ``text``."""
    marks = [m for m in _PART.finditer(text) if m.group(1) in PERSPECTIVES]
    parts = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        parts.append({"perspective": m.group(1), "text": text[m.end():end].strip()})
    synthesis = None
    tail_start = marks[-1].end() if marks else 0
    s = _SYNTHESIS.search(text, tail_start)
    if s:
        synthesis = text[s.end():].strip()
        if parts:
            parts[-1]["text"] = text[marks[-1].end():s.start()].strip()
    return {"asked": keys, "parts": parts, "synthesis": synthesis}
