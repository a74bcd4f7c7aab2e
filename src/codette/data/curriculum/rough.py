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


# ------------------------------------------------------------------------------------------------
# Chat-speak: the short forms people type to a chatbot ("r u a bot", "whats ur name", "pls")
# ------------------------------------------------------------------------------------------------
# How a question is written, chosen by the generator and kept in the sample's key: as written, lower
# case, lower case without the final mark, chat-speak with "u"/"ur" only, full chat-speak, or a typo.
CASUAL = ("as_written", "lower", "lower_bare", "u", "txt", "typo")
# Word -> short form. "u" swaps only the first group (you, your); "txt" swaps all of them.
_U_FORMS = {"you": "u", "your": "ur", "yourself": "urself", "what's": "whats", "you're": "ur"}
_TXT_FORMS = {**_U_FORMS, "are": "r", "please": "pls", "i'm": "im", "don't": "dont", "can't": "cant",
              "doesn't": "doesnt", "isn't": "isnt", "that's": "thats", "it's": "its", "won't": "wont",
              "thanks": "thx", "because": "cuz", "okay": "ok", "really": "rly", "people": "ppl", "about": "abt",
              "do you": "do u", "what is": "whats", "who is": "whos", "to be honest": "tbh",
              "by the way": "btw", "i do not": "i dont", "going to": "gonna", "want to": "wanna"}
_PHRASES = sorted((k for k in _TXT_FORMS if " " in k), key=len, reverse=True)
_EDGE = ".,!?:;\"()"


def _swap_words(text: str, forms: dict[str, str]) -> str:
    low = text.lower().replace("\u2019", "'")
    for phrase in (p for p in _PHRASES if p in forms):
        low = re.sub(rf"\b{re.escape(phrase)}\b", forms[phrase], low)
    out = []
    for w in low.split(" "):
        core = w.strip(_EDGE)
        if core in forms:
            w = w.replace(core, forms[core], 1)
        out.append(w)
    return " ".join(out)


def casual(text: str, style: str, keep: frozenset[str] | set[str] = frozenset()) -> str:
    """``text`` written the way ``style`` (one of :data:`CASUAL`) types it; deterministic for a text and style.

    Chat-speak (``u``, ``txt``) and ``lower*`` are lower case; ``*_bare`` and ``txt`` drop the final
    mark; ``typo`` swaps two inner letters of one word (seeded by the text itself, so the sample's key,
    which holds the style, fixes the result), never of a word in ``keep`` (lower case), and writes the
    text lower case without its final mark when no word fits.
    """
    if style == "as_written":
        return text
    if style == "typo":
        words = text.split(" ")
        fits = [i for i, w in enumerate(words) if len(w.strip(_EDGE)) >= 5 and w.strip(_EDGE).isalpha()
                and w.strip(_EDGE).lower() not in keep]
        if not fits:
            return casual(text, "lower_bare")
        rng = random.Random(digest64(text))
        i = rng.choice(fits)
        core = words[i].strip(_EDGE)
        words[i] = words[i].replace(core, _typo(rng, core), 1)
        return " ".join(words)
    if style in ("lower", "lower_bare"):
        out = text.lower()
    else:
        out = _swap_words(text, _U_FORMS if style == "u" else _TXT_FORMS)
    if style in ("lower_bare", "txt"):
        out = out.rstrip(".?!")
    return out
