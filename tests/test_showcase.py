"""The quickstart's sample chats: through the agent's tool loop with the default tools, each checked."""

from __future__ import annotations

from codette.backends.base import Chunk, collect
from codette.evaluate.showcase import SHOWCASE, sample_chats
from codette.persona import (CONSCIOUSNESS_MARK, DEFAULT_SYSTEM, KIND, PERSPECTIVE_MARK,
                             PERSPECTIVE_VOCABULARY)
from codette.tools import ToolCall, format_tool_calls
from codette.tooltable import TOOL_NAMES


class Answers:
    """A backend that answers each showcase prompt with ``script[prompt]`` (a call, then text after results)."""

    name = "answers"

    def __init__(self, expression: str) -> None:
        self.expression, self.prompts, self.tools = expression, [], []

    def _reply(self, messages: list[dict]) -> str:
        self.prompts.append(messages)
        ask = next(m["content"] for m in reversed(messages) if m["role"] == "user")
        if messages[-1]["role"] == "tool":
            return "The result is " + messages[-1]["content"].split('"result": ')[1].rstrip("}") + "."
        if ask.startswith("What is"):
            return format_tool_calls([ToolCall("calculator", {"expression": self.expression})])
        if ask.startswith("Who"):
            return f"{CONSCIOUSNESS_MARK} I am Codette, {KIND}."
        if "Newton" in ask:
            return f"{PERSPECTIVE_MARK} newton " + " ".join(sorted(PERSPECTIVE_VOCABULARY["newton"]))
        return f"{PERSPECTIVE_MARK} newton Forces. {PERSPECTIVE_MARK} davinci Design."

    def stream(self, messages, tools=None, sampling=None):
        self.tools.append([t["function"]["name"] for t in tools or []])
        yield Chunk(self._reply(messages), finish_reason="stop")

    def chat(self, messages, tools=None, sampling=None):
        return collect(self.stream(messages, tools, sampling)).text


def test_a_model_that_listens_gets_every_showcase_chat_right():
    backend = Answers("144 * 12")
    chats = sample_chats(backend, len(SHOWCASE))
    assert [c["right"] for c in chats] == [True] * len(SHOWCASE), chats
    calc = chats[2]
    assert calc["tool_calls"][0]["name"] == "calculator" and "1728" in calc["assistant"]
    # The prompt the agent sends: the persona's system prompt and the ten default tools.
    assert backend.prompts[0][0] == {"role": "system", "content": DEFAULT_SYSTEM}
    assert all(names == [t for t in TOOL_NAMES if t != "execute_python"] for names in backend.tools)


def test_a_call_with_the_wrong_values_is_a_wrong_showcase_chat():
    chats = sample_chats(Answers("4 ** 3"), len(SHOWCASE))
    assert chats[2]["right"] is False and "4 ** 3" in chats[2]["why"]
    assert [c["right"] for i, c in enumerate(chats) if i != 2] == [True] * (len(SHOWCASE) - 1)
