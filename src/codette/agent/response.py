"""What one turn of the agent returns: the answer, every tool call it made, and its measurements."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ToolCallRecord:
    """One executed (or refused) call: ``result`` is the tool message's JSON text as the model saw it."""

    name: str
    arguments: dict[str, Any]
    result: str
    ok: bool
    seconds: float
    round: int  # 0 for image analysis before the model answers, then 1, 2, ... per model reply
    error: str | None = None

    @property
    def data(self) -> Any:
        """The result parsed back from JSON."""
        return json.loads(self.result)


@dataclass
class Response:
    """One answer. JSON-serialisable (:meth:`to_dict`, :meth:`to_json`).

    ``messages`` is this turn as chat messages (the user's, the calls, the results, the answer):
    append it to the history to continue the conversation. ``error`` is set when the turn stopped
    without a final answer (repairs exhausted, ``max_rounds`` reached, the context overflowed, the
    backend failed); ``text`` then holds whatever prose the model wrote.

    ``text`` is for people: the control markers the model writes (``<consciousness>``,
    ``<perspective> KEY``) are removed unless the turn asked for ``raw``, and ``markers`` says what they
    were (``{"consciousness": bool, "perspectives": [KEY, ...]}``). ``messages`` keep the model's own
    text, markers included, because they go back to the model as history.
    """

    text: str
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    perspectives: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    model: str = ""
    markers: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)
