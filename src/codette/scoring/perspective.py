"""Perspective adherence: asked for perspective X, does the answer say it is X and sound like X?

Per probe (0/1 each):

* ``marker_ok``: the first ``<perspective> <key>`` marker in the answer names X.
* ``style_ok``: X is the *dominant style* of the answer: among the eleven signature vocabularies
  (:data:`codette.persona.PERSPECTIVE_VOCABULARY`, the same word lists the data's answers are
  written from, disjoint between perspectives), X's has strictly the most distinct words in the
  answer. Words that occur in the user's prompt are ignored, so repeating "bias mitigation" from
  the question does not make an answer sound like bias mitigation.
* ``adherent``: both.

The confusion matrices count (asked X, answered Y) with Y the marker's key (``confusion``) or the
dominant style (``style_confusion``); ``none`` when there is no marker or no single dominant style.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from codette.persona import PERSPECTIVE_MARK as MARK
from codette.persona import PERSPECTIVE_VOCABULARY as VOCABULARY
from codette.persona import PERSPECTIVES

_MARKER = re.compile(re.escape(MARK) + r"\s*([a-z_]+)")
_WORD = re.compile(r"[a-z]+")
NONE = "none"


@dataclass
class PerspectiveScore:
    asked: str
    marker: str  # key of the first marker, or "none"
    style: str  # dominant style, or "none"
    marker_ok: int
    style_ok: int
    adherent: int

    def as_dict(self) -> dict:
        return asdict(self)


def first_marker(text: str) -> str:
    m = _MARKER.search(text)
    return m.group(1) if m and m.group(1) in PERSPECTIVES else NONE


def dominant_style(text: str, prompt: str = "") -> str:
    """The perspective whose signature words ``text`` uses most, ignoring words of ``prompt``."""
    words = set(_WORD.findall(_MARKER.sub(" ", text).lower())) - set(_WORD.findall(prompt.lower()))
    hits = {k: len(words & v) for k, v in VOCABULARY.items()}
    best = max(hits.values(), default=0)
    winners = [k for k, n in hits.items() if n == best]
    return winners[0] if best > 0 and len(winners) == 1 else NONE


def score_perspective(answer: str, asked: str, prompt: str = "") -> PerspectiveScore:
    marker = first_marker(answer)
    style = dominant_style(answer, prompt)
    m, s = int(marker == asked), int(style == asked)
    return PerspectiveScore(asked, marker, style, m, s, int(m and s))


def confusion(pairs: list[tuple[str, str]]) -> dict:
    """{'labels': rows (asked), 'columns': answered (+ 'none'), 'counts': rows x columns}."""
    labels = list(PERSPECTIVES)
    columns = labels + [NONE]
    counts = [[0] * len(columns) for _ in labels]
    for asked, got in pairs:
        if asked in labels:
            counts[labels.index(asked)][columns.index(got if got in columns else NONE)] += 1
    return {"labels": labels, "columns": columns, "counts": counts}
