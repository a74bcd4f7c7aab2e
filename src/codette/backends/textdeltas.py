"""Token ids in, text deltas out: how the local and GGUF backends stream what they decode.

Decoding one token at a time would split multi-byte characters and merge-dependent spaces, so the
whole reply is decoded again at each step and only the new suffix is sent; a suffix that ends in an
incomplete UTF-8 character (U+FFFD) is held back until the next token completes it.
"""

from __future__ import annotations

from collections.abc import Callable


class TextDeltas:
    """Feed token ids with :meth:`push`; each call returns the text that became final."""

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self.ids: list[int] = []
        self._sent = ""

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        return self._delta(final=False)

    def flush(self) -> str:
        """Whatever is still held back (at the end of the reply)."""
        return self._delta(final=True)

    def _delta(self, final: bool) -> str:
        text = self._decode(self.ids)
        if not final and text.endswith("\ufffd"):
            return ""
        if not text.startswith(self._sent):  # a later token changed earlier text; send only what is new
            common = 0
            while common < min(len(text), len(self._sent)) and text[common] == self._sent[common]:
                common += 1
            self._sent = text[:common]
        delta = text[len(self._sent):]
        self._sent = text
        return delta
