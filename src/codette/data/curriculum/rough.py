"""Users type fast: some user messages are written lower-case, without the final punctuation, or with a typo.

A template's phrasing is tidy; people's is not ("whats in notes.txt", "Caluclate 12 * 7"). A share of
user messages is roughened after a sample is made, so the model meets the same request in the forms
people type it. What the conversation must carry stays exact: a word that the assistant's replies or
a call's arguments repeat, and any word with a digit or a symbol in it (file names, numbers,
expressions, URLs), is never changed, so every value the call copies is still in the request
verbatim. The choice is seeded by the sample's key, so a key always gives the same text.
"""

from __future__ import annotations

import json
import random
import re

from codette.data.curriculum.common import Sample, digest64

ROUGH_SHARE = 0.2  # of user messages
STYLES = ("lower", "bare", "typo", "lower_bare")
_WORD = re.compile(r"\S+")
_LETTERS = re.compile(r"[A-Za-z]+")


def _protected(sample: Sample) -> set[str]:
    """Words the conversation repeats elsewhere: in the assistant's text or in a call's arguments."""
    said: list[str] = []
    for m in sample.messages:
        if m["role"] == "assistant":
            said.append(m.get("content") or "")
            for c in m.get("tool_calls") or []:
                said.append(json.dumps(c["function"]["arguments"], ensure_ascii=False))
    return {w.strip(".,!?:;\"'()") for w in _WORD.findall(" ".join(said))} - {""}


def _keep(word: str, protected: set[str]) -> bool:
    bare = word.strip(".,!?:;\"'()")
    return not _LETTERS.fullmatch(bare or "-") or bare in protected


def _typo(rng: random.Random, word: str) -> str:
    """Two neighbouring inner letters swapped (``calculate`` -> ``calcualte``)."""
    i = rng.randrange(1, len(word) - 2)
    return word[:i] + word[i + 1] + word[i] + word[i + 2:]


def roughen_text(rng: random.Random, text: str, protected: set[str], style: str) -> str:
    """``text`` in ``style``; protected words and words with digits or symbols are left as they are."""
    out = []
    typo_at = None
    words = text.split(" ")
    if style == "typo":
        fits = [i for i, w in enumerate(words) if len(w) >= 5 and w.isalpha() and not _keep(w, protected)]
        typo_at = rng.choice(fits) if fits else None
    for i, w in enumerate(words):
        if i == typo_at:
            w = _typo(rng, w)
        elif style in ("lower", "lower_bare") and not _keep(w, protected):
            w = w.lower()
        out.append(w)
    text = " ".join(out)
    if style in ("bare", "lower_bare") and text[-1:] in ".?!":
        text = text[:-1]
    return text


def roughen(sample: Sample, share: float = ROUGH_SHARE) -> Sample:
    """``sample`` with about ``share`` of its user messages roughened (in place; returned for chaining)."""
    rng = random.Random(digest64(sample.key))
    protected = None
    for m in sample.messages:
        if m["role"] != "user" or not isinstance(m.get("content"), str) or rng.random() >= share:
            continue
        protected = _protected(sample) if protected is None else protected
        style = rng.choice(STYLES)
        new = roughen_text(rng, m["content"], protected, style)
        if new != m["content"]:
            m["content"] = new
            sample.meta["rough"] = sorted({*sample.meta.get("rough", []), style})
    return sample
