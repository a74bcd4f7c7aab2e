"""Keep the model's markup out of the text people read: the agent shows it in other ways.

:class:`MarkupFilter` hides ``<tool_call>...</tool_call>`` blocks (the agent shows calls as events).
:class:`MarkerFilter` hides the persona's control markers, ``<consciousness>``, ``<perspective> KEY``
and ``<tool>``: they are special tokens the model is trained to write, meaningless to a reader, so
the agent reports them as metadata (:func:`strip_markers`) instead. Both pass text on as it arrives,
except a tail that could still become markup, held until the next piece decides.
"""

from __future__ import annotations

import re
from typing import Any

from codette.persona import CONSCIOUSNESS_MARK, PERSPECTIVE_MARK, PERSPECTIVES
from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN

TOOL_MARK = "<tool>"  # a content token of the tokenizer that no data uses; never shown either
_MARKS = (CONSCIOUSNESS_MARK, PERSPECTIVE_MARK, TOOL_MARK)
# A marker, the perspective key after <perspective>, and the blanks after them up to one line break
# ("<perspective> newton\n" opens a part, "<consciousness> " an answer about Codette itself).
_MARKER = re.compile("(?P<perspective>" + re.escape(PERSPECTIVE_MARK) + r")[ \t]*(?:(?P<key>"
                     + "|".join(sorted(PERSPECTIVES, key=len, reverse=True)) + r")(?![a-z_])[ \t]*)?\n?"
                     "|(?P<other>" + re.escape(CONSCIOUSNESS_MARK) + "|" + re.escape(TOOL_MARK) + r")[ \t]*\n?")
_LONGEST_KEY = max(map(len, PERSPECTIVES))


class MarkupFilter:
    def __init__(self) -> None:
        self._buf = ""
        self._inside = False

    def feed(self, text: str) -> str:
        self._buf += text
        out: list[str] = []
        while self._buf:
            if self._inside:
                end = self._buf.find(TOOL_CALL_CLOSE)
                if end < 0:
                    self._buf = self._buf[-(len(TOOL_CALL_CLOSE) - 1):]
                    break
                self._buf = self._buf[end + len(TOOL_CALL_CLOSE):]
                self._inside = False
                continue
            start = self._buf.find(TOOL_CALL_OPEN)
            if start >= 0:
                out.append(self._buf[:start])
                self._buf = self._buf[start + len(TOOL_CALL_OPEN):]
                self._inside = True
                continue
            keep = partial_tail(self._buf, TOOL_CALL_OPEN)
            out.append(self._buf[: len(self._buf) - keep])
            self._buf = self._buf[len(self._buf) - keep:]
            break
        return "".join(out)

    def flush(self) -> str:
        """The held-back tail at the end of a reply (nothing if a call block was left open)."""
        rest, self._buf = ("" if self._inside else self._buf), ""
        self._inside = False
        return rest


def partial_tail(text: str, tag: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-n:]):
            return n
    return 0


class MarkerFilter:
    """Remove the control markers from text that arrives in pieces, and note what they said.

    A marker split across pieces is held back until it is whole (``<perspec`` + ``tive> newton``),
    and so is a perspective key that may still grow (``<perspective> new``). ``found`` lists what was
    removed, in order: ``("consciousness", None)``, ``("perspective", "newton")``, ``("tool", None)``.
    """

    def __init__(self) -> None:
        self._buf = ""
        self.found: list[tuple[str, str | None]] = []

    def feed(self, text: str) -> str:
        return self._scan(self._buf + text, final=False)

    def flush(self) -> str:
        """The held-back tail at the end of the text (a marker in it removed)."""
        return self._scan(self._buf, final=True)

    def _scan(self, buf: str, final: bool) -> str:
        out: list[str] = []
        pos = 0  # read up to here (cutting the rest off after each marker made many markers quadratic)
        while True:
            m = _MARKER.search(buf, pos)
            if m is None:
                keep = 0 if final else min(len(buf) - pos, max(partial_tail(buf, mark) for mark in _MARKS))
                out.append(buf[pos: len(buf) - keep])
                self._buf = buf[len(buf) - keep:]
                return "".join(out)
            if not final and not _decided(m, buf):
                out.append(buf[pos: m.start()])
                self._buf = buf[m.start():]
                return "".join(out)
            out.append(buf[pos: m.start()])
            self.found.append(((m.group("perspective") or m.group("other"))[1:-1], m.group("key")))
            pos = m.end()

    def markers(self) -> dict[str, Any]:
        """What the removed markers said: ``{"consciousness": bool, "perspectives": [KEY, ...]}``."""
        return {"consciousness": any(kind == "consciousness" for kind, _ in self.found),
                "perspectives": [key for kind, key in self.found if kind == "perspective" and key]}


def _decided(m: re.Match, buf: str) -> bool:
    """Whether more text could no longer change the marker ``m`` found in ``buf``: something follows it
    that is not the start of a perspective key it could still take."""
    rest = buf[m.end(): m.end() + _LONGEST_KEY + 1]  # more than a key's length decides it; copy no more
    if not rest:
        return False
    if m.group("perspective") and m.group("key") is None and not m.group(0).endswith("\n"):
        return not any(key.startswith(rest) for key in PERSPECTIVES)
    return True


def strip_markers(text: str) -> tuple[str, dict[str, Any]]:
    """``text`` without its control markers, and what they said (see :meth:`MarkerFilter.markers`)."""
    filt = MarkerFilter()
    clean = filt.feed(text) + filt.flush()
    return clean, filt.markers()
