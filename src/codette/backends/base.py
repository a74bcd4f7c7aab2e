"""The one small interface every generation backend implements (evaluation and the agent use it)."""

from __future__ import annotations

from typing import Protocol

from codette.model.generate import SamplingConfig


class ChatBackend(Protocol):
    name: str

    def chat(self, messages: list[dict], tools: list[dict] | None = None,
             sampling: SamplingConfig | None = None) -> str:
        """The assistant's next message (raw text, tool-call markup included) for ``messages``."""
        ...
