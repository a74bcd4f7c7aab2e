"""Finishing a held reply inside its token budget.

A grammar says what may come next, never how soon the reply must end. A model held to a tool call can
write a path string until ``max_new_tokens`` (or the context) cuts it, and a cut call is invalid JSON,
which is what holding it was meant to prevent. So both local engines plan the end in the budget's last
:data:`WINDOW` tokens (llama.cpp and llguidance do not; a reply cut there is ``finish_reason: length``).

A *plan* is a way out: tokens the grammar allows, one after another, after which the reply may end.

- Each token the model picks in the window is taken only if a plan from after it fits what is left of
  the budget, one token to spare (:data:`END`: the reply then ends as a complete one does). Where the reply could end (free text, between calls) that is one step on the grammar;
  inside a call or a JSON answer the check is made once half of the room the last plan left is used
  (every token once it is one or none): a token inside a structure rarely adds more than one token to
  the way out of it, and this keeps the cost to a few plans a reply.
- A plan is first the last one made, replayed from the new state (inside a string the way out does not
  change as the string grows: close it, then what came after); only when that no longer holds is a new
  one made by the *policy* (:meth:`Finish.plan`, on a copy of the grammar): the first of :func:`closers`
  the grammar allows (tokens made only of ``"``, ``}``, ``]`` and a newline, those that close a string
  first, the call's closing marker, a comma), and where none is allowed (a required key not written yet,
  a number's first digit, an enum's letters) the allowed token with the longest text.
- When no plan from after the model's token fits, a reply that could end here ends here, rather than
  open a call (or a second one) it cannot finish; one inside a call or a JSON answer writes its plan from
  here and ends.

A reply that starts writing its plan inside the budget ends inside it; only a reply that enters the
window needing more than the whole window, or whose way out grew faster than the plans were made, can
still be cut. Outside the window, and inside it while a plan fits, the reply is the model's, token for
token. A string cut short is still a valid string (a path that names no file gets the tool's own error),
in a call the agent can run, or repair.

This module is engine-free: each backend hands it its grammar as a :class:`Grammar`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product
from typing import Protocol

WINDOW = 48  # the budget's last tokens in which the end is planned: room for a call of the largest tool
# A way out leaves room for one more step, where the reply ends with the end of its turn: one that used the
# budget's last token would be reported cut (``finish_reason: "length"``; OpenAI's client refuses to parse it).
END = 1
CLOSING = ('"', "}", "]")


class Grammar(Protocol):
    """What :class:`Finish` needs of an engine's grammar state (llguidance's matcher, llama.cpp's sampler)."""

    def fork(self) -> Grammar:
        """An independent copy, to advance without touching this one."""

    def allows(self, token: int) -> bool:
        """Whether ``token`` may come next."""

    def accept(self, token: int) -> None:
        """Advance past ``token`` (one it allows)."""

    def can_end(self) -> bool:
        """Whether the reply may end here (the grammar allows the end of the turn)."""

    def longest_allowed(self) -> int | None:
        """The allowed token with the longest text, the lowest id among equals (None: nothing is allowed)."""

    def close(self) -> None:
        """Free what the engine holds for this state (a fork is closed when its plan is made)."""


def closers(encode: Callable[[str], list[int]]) -> list[int]:
    """The policy's tokens, the preferred first: every text of one to three closing characters, with or
    without a newline after them, that the tokenizer writes as one token, the tool call's closing marker,
    and a comma: those that start by closing a string first, the longer first, the marker after them
    (inside a string, ``}`` and, for llama.cpp's grammar over characters, the marker's text are characters:
    ``"`` is its end), the comma last but for a newline (it ends a number, whose digits could go on, where a
    required key is still to come)."""
    from codette.tools.calls import TOOL_CALL_CLOSE  # here: codette.tools loads every tool

    texts = ["".join(chars) + end for n in (1, 2, 3) for chars in product(CLOSING, repeat=n) for end in ("", "\n")]
    texts.sort(key=lambda text: (not text.startswith('"'), -len(text)))
    quoted = sum(text.startswith('"') for text in texts)
    order: list[int] = []
    for text in [*texts[:quoted], TOOL_CALL_CLOSE, *texts[quoted:], ", ", ",", "\n"]:
        ids = encode(text)
        if len(ids) == 1 and ids[0] not in order:
            order.append(ids[0])
    return order


class Finish:
    """One reply's finish: the decoding loop hands :meth:`step` each token the model picks and writes what it
    returns."""

    def __init__(self, order: Sequence[int], window: int | None = None) -> None:
        """``order``: :func:`closers`; ``window``: :data:`WINDOW` unless given (0: never finish, cut instead)."""
        self.order, self.window = tuple(order), WINDOW if window is None else window
        self.finishing = False  # writing its plan
        self.way: list[int] | None = None  # a plan from the current state (None: not known)
        self._last: tuple[int, ...] = ()  # the last plan made or replayed, to try again from a later state
        self._endable: bool | None = None  # whether the reply may end before the next token (None: unknown)
        self._replan = self.window  # inside a structure, check again at this many remaining tokens

    def closer(self, grammar: Grammar) -> int | None:
        """The first of the policy's tokens ``grammar`` allows next."""
        return next((token for token in self.order if grammar.allows(token)), None)

    def plan(self, grammar: Grammar, limit: int) -> list[int] | None:
        """The policy's way out from ``grammar`` (None: longer than ``limit``, or a dead end); ``grammar``
        itself is left as it is."""
        if grammar.can_end():
            return []
        trial, way = grammar.fork(), []
        try:
            while len(way) < limit:
                token = self.closer(trial)
                if token is None:
                    token = trial.longest_allowed()
                    if token is None:
                        return None
                trial.accept(token)
                way.append(token)
                if trial.can_end():
                    return way
            return None
        finally:
            trial.close()

    def replays(self, grammar: Grammar, way: Sequence[int], limit: int) -> bool:
        """Whether ``way`` is a way out from ``grammar`` too, no longer than ``limit``: every token allowed in
        turn, and the reply may end after the last (``grammar`` itself is left as it is)."""
        if not way or len(way) > limit:
            return False
        trial = grammar.fork()
        try:
            for token in way:
                if not trial.allows(token):
                    return False
                trial.accept(token)
            return trial.can_end()
        finally:
            trial.close()

    def way_after(self, grammar: Grammar, token: int, limit: int) -> list[int] | None:
        """A way out after ``token`` no longer than ``limit`` (None: the policy finds none)."""
        way = self.way
        if way and way[0] == token and len(way) - 1 <= limit:
            return way[1:]
        after = grammar.fork()
        try:
            after.accept(token)
            if after.can_end():
                return []
            if self.replays(after, self._last, limit):
                return list(self._last)
            return self.plan(after, limit)
        finally:
            after.close()

    def step(self, grammar: Grammar, token: int | None, remaining: int) -> int | None:
        """The reply's next token, accepted into ``grammar``, or None where the reply ends: ``token`` is the
        model's pick (one ``grammar`` allows, not the end of the turn; ignored once :attr:`finishing`),
        ``remaining`` the tokens the reply may still write, this one included."""
        if not self.finishing and token is not None:
            if remaining > self.window:
                grammar.accept(token)
                return token
            endable = grammar.can_end() if self._endable is None else self._endable
            if endable:  # the reply may end here: take the token, unless it opens what cannot end in time
                grammar.accept(token)  # (where the reply ends instead, the grammar is not used again)
                way = self.plan(grammar, remaining - 1 - END)
                if way is None:
                    return None
                return self._took(token, way, remaining)
            if remaining > self._replan:  # inside a structure whose last plan left room for this token
                grammar.accept(token)
                self.way = self.way[1:] if self.way and self.way[0] == token else None
                self._endable = None
                return token
            way = self.way_after(grammar, token, remaining - 1 - END)
            if way is not None:
                grammar.accept(token)
                return self._took(token, way, remaining)
            self.finishing = True
            if self.way is None:  # no plan from here yet: make one (when it does not fit, the reply is cut)
                self.way = self.plan(grammar, max(remaining - END, self.window)) or []
        if not self.way:
            return None
        chosen = self.way.pop(0)
        grammar.accept(chosen)
        return chosen

    def _took(self, token: int, way: list[int], remaining: int) -> int:
        """``token`` is taken and ``way`` leads out after it: check again once half the spare room is used."""
        self.way, self._endable = way, not way
        if way:
            self._last = tuple(way)  # (``way`` itself is popped from once the reply writes it)
        spare = remaining - 1 - END - len(way)
        self._replan = remaining - max(1, spare // 2)
        return token
