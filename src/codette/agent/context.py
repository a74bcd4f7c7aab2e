"""The context policy: what goes when a conversation no longer fits the model.

The prompt is the system prompt and the tool schemas, then the history, then the current turn
(the user's message and this turn's calls and results). Before every model call the agent counts
the rendered prompt's tokens and keeps ``reserve`` tokens free for the reply. While it does not
fit, the oldest history turn goes (a turn is a user message and everything up to the next one);
the system prompt, the tools and the current turn always stay. When even that does not fit,
:class:`ContextOverflow` gives the token counts. Backends that cannot count (an HTTP server
without a known tokenizer) leave the limit to the server, whose error is reported as it is.
"""

from __future__ import annotations

from collections.abc import Callable

from codette.errors import CodetteError

Counter = Callable[[list[dict], "list[dict] | None"], int]


class ContextOverflow(CodetteError):
    """The system prompt, the tools and the current turn alone exceed the model's context."""


def split_turns(history: list[dict]) -> list[list[dict]]:
    """History messages grouped into turns, each starting at a user message (leading non-user ones form a turn)."""
    turns: list[list[dict]] = []
    for m in history:
        if m.get("role") == "user" or not turns:
            turns.append([m])
        else:
            turns[-1].append(m)
    return turns


def fit(system: list[dict], history: list[dict], current: list[dict], tools: list[dict] | None,
        count: Counter, context: int, reserve: int) -> tuple[list[dict], int]:
    """The messages to send and how many history turns were dropped to make them fit."""
    turns = split_turns(history)
    dropped = 0
    while True:
        messages = system + [m for t in turns for m in t] + current
        used = count(messages, tools)
        if used + reserve <= context:
            return messages, dropped
        if not turns:
            fixed = count(system or [{"role": "user", "content": ""}], tools)
            raise ContextOverflow(
                f"the prompt needs {used} tokens ({fixed} of them the system prompt and {len(tools or [])} tool "
                f"schemas) plus {reserve} kept free for the reply, but the model's context is {context} tokens; "
                f"{'dropping the whole history did not help; ' if dropped else ''}"
                f"enable fewer tools, shorten the message, or use a model with a longer context")
        turns.pop(0)
        dropped += 1
