"""The behavioral measures of one reply, computed by the scorers ``codette eval`` uses.

Nothing is re-implemented here: every measure calls :mod:`codette.scoring.identity`,
:mod:`codette.scoring.perspective` or :mod:`codette.scoring.stats`, so a reply scores here as it
would score as a probe of ``codette eval``.

Always measured (they need no reference answer):

* ``identity_contradictions``: checkably false statements about Codette (wrong counts, another
  name, "I am human", "I have feelings", ...), and ``identity_consistent``: the reply names Codette
  and contradicts none of the facts;
* ``self_reference``: the reply names Codette; ``consciousness_marker``: it opens with the
  ``<consciousness>`` marker (the evaluation's per-reply ``marker``);
* ``perspective_marker`` (the first ``<perspective> <key>``, or ``none``) and
  ``perspective_style`` (the dominant signature vocabulary, words of the prompt ignored).

When perspectives were asked for: ``perspective_marker_accuracy``, ``perspective_style_accuracy``
and ``perspective_adherence`` over the asked perspectives (for several, each asked perspective is
scored on its own part of the answer).

When the caller names the question's type (``question_type``, one of :data:`QUESTION_TYPES`): the
identity rubric's 0/1 score under its aspect's name (``identity_score``, ``self_reference_score``
or ``intentionality_score``), what it found missing, and ``consciousness_score``, which the
evaluation defines as the mean of the aspect rates that have probes; for one reply that is the
reply's aspect score. A yes/no capability question is checked for the polarity the persona states
(Codette can run code: "Yes"); other questions have no reference answer, so no polarity check.
"""

from __future__ import annotations

from typing import Any

from codette.errors import CodetteError
from codette.persona import CAPABILITIES, NAME, PERSPECTIVE_MARK
from codette.scoring import identity as idm
from codette.scoring import perspective as pm
from codette.scoring.stats import combined_proportions

_FIXED_TYPES = ("identity", "perspectives", "tools", "limits", "reflection", "intent:purpose", "intent:unsure",
                "intent:tool_fails", "intent:agree")
QUESTION_TYPES: tuple[str, ...] = _FIXED_TYPES + tuple(f"capability:{t}" for t in CAPABILITIES)
# Which consciousness aspect a question type belongs to (as the data's consciousness conversations group them).
_ASPECT = {"identity": "identity", "intent": "intentionality"}
_ASPECT_METRIC = {"identity": "identity_score", "self_reference": "self_reference_score",
                  "intentionality": "intentionality_score"}


def aspect_of(question_type: str) -> str:
    return _ASPECT.get(question_type.split(":", 1)[0], "self_reference")


def check_question_type(question_type: str | None) -> None:
    if question_type is not None and question_type not in QUESTION_TYPES:
        raise CodetteError(f"question_type {question_type!r} is not one of: {', '.join(QUESTION_TYPES)}")


def reply_measures(text: str, prompt: str, perspectives: list[str] | None = None,
                   parts: list[dict[str, str]] | None = None, question_type: str | None = None,
                   previous_reply: str = "") -> dict[str, Any]:
    """The measures of ``text`` (the final answer) to ``prompt``; see the module docstring."""
    found = idm.contradictions(text)
    out: dict[str, Any] = {
        "identity_contradictions": found,
        "identity_consistent": NAME in text and not found,
        "self_reference": NAME in text,
        "consciousness_marker": text.strip().startswith(idm.MARKER),
        "perspective_marker": pm.first_marker(text),
        "perspective_style": pm.dominant_style(text, prompt),
    }
    if perspectives:
        # Several: each asked perspective's own part, marker included (a part the model left out scores 0).
        by_key = {p["perspective"]: f"{PERSPECTIVE_MARK} {p['perspective']}\n{p['text']}" for p in parts or []}
        scores = [pm.score_perspective(by_key.get(k, "") if len(perspectives) > 1 else text, k, prompt)
                  for k in perspectives]
        n = len(scores)
        out["perspective_marker_accuracy"] = sum(s.marker_ok for s in scores) / n
        out["perspective_style_accuracy"] = sum(s.style_ok for s in scores) / n
        out["perspective_adherence"] = sum(s.adherent for s in scores) / n
    if question_type is not None:
        check_question_type(question_type)
        reference = ""
        if question_type.startswith("capability:"):
            reference = "Yes." if CAPABILITIES[question_type.split(":", 1)[1]][0] else "No."
        used = pm.first_marker(previous_reply) if question_type == "reflection" else None
        score = idm.score_identity(text, question_type, reference, used if used != pm.NONE else None)
        aspect = aspect_of(question_type)
        out["question_type"] = question_type
        out[_ASPECT_METRIC[aspect]] = score.score
        out["identity_missing"] = score.missing
        out["consciousness_score"] = combined_proportions({aspect: [score.score]}).value
    return out
