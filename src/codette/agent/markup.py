"""Hide ``<tool_call>...</tool_call>`` markup from streamed text: the agent shows calls as events.

Text is passed on as it arrives, except a tail that could be the start of ``<tool_call>`` (held
until the next piece decides) and everything inside a call block.
"""

from __future__ import annotations

from codette.tools.calls import TOOL_CALL_CLOSE, TOOL_CALL_OPEN


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
