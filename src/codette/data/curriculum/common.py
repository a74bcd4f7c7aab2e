"""What every curriculum module shares: the Sample type, message helpers, number formatting, word lists.

A sample's *key* is its (category, template, slot values) combination. Everything that changes the
conversation's user/assistant text must be a slot, so that distinct keys give distinct texts; choices
that only decorate (the optional system prompt, distractor tools) stay out of the key, so a
held-out combination is never in training merely dressed differently.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field

from codette.persona import DEFAULT_SYSTEM, SYSTEM_PROMPTS

def digest64(text: str) -> int:
    """64-bit fingerprint of a text (sets of these stay small where sets of keys or texts would not)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


@dataclass
class Sample:
    """One conversation plus the metadata the split, the stats and the evaluation need."""

    category: str
    template: str
    slots: tuple
    messages: list[dict]
    meta: dict = field(default_factory=dict)
    tools: list[dict] | None = None  # the tool schemas shown in the system turn (compact subset)

    @property
    def key(self) -> str:
        return json.dumps([self.category, self.template, list(self.slots)], ensure_ascii=False)

    def to_json(self) -> dict:
        rec: dict = {"messages": self.messages}
        if self.tools:
            rec["tools"] = self.tools
        rec.update({"category": self.category, "template": self.template, **self.meta})
        return rec


def fmt(x: float) -> str:
    """Numbers as a person writes them: at most 2 decimals, no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


def fmt_big(x: float) -> str:
    """Like :func:`fmt`, with thousands separators for large numbers."""
    if abs(x) >= 10000:
        s = f"{x:,.2f}".rstrip("0").rstrip(".")
        return s
    return fmt(x)


def pct(x: float) -> str:
    """A fraction as a percentage with at most one decimal."""
    s = f"{100 * x:.1f}".rstrip("0").rstrip(".")
    return f"{s}%"


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def user(content: str) -> dict:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


def with_system(rng: random.Random, turns: list[dict], p: float = 0.4) -> list[dict]:
    """Optionally prepend one of the system prompts (decoration, not part of the key)."""
    if rng.random() < p:
        return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, *turns]
    return turns


def with_agent_system(rng: random.Random, turns: list[dict]) -> list[dict]:
    """The system prompt as deployed: mostly the agent's own (:data:`DEFAULT_SYSTEM`), sometimes another
    of the persona's, sometimes none (a client that sends none)."""
    r = rng.random()
    if r < 0.7:
        return [{"role": "system", "content": DEFAULT_SYSTEM}, *turns]
    if r < 0.85:
        return [{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}, *turns]
    return turns


def join_words(items: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


TOPICS = [
    "a bridge over a river", "a falling apple", "a bicycle", "a city garden", "a solar panel", "a violin",
    "a rainy afternoon", "a spinning top", "a paper airplane", "a lighthouse", "an ocean wave", "a clock",
    "a snowflake", "a wind turbine", "a library", "a beehive", "a mountain trail", "a cup of coffee",
    "a thunderstorm", "a chess game", "a telescope", "a rocket launch", "a forest fire", "a coral reef",
    "a traffic jam", "a heartbeat", "a musical scale", "a spider web", "a printing press", "a sailboat",
    "a volcano", "a rainbow", "a pendulum", "a glacier", "a market square", "a vaccine", "a new habit",
    "a difficult decision", "a team project", "a friendship", "a computer chip", "a map", "a seed",
    "a job interview", "a school exam", "a hospital queue", "a hiring process", "a loan application",
    "a search engine", "a recommendation app", "a self-driving car", "a news feed", "a voting system",
    "a kitchen recipe", "a garden hose", "an elevator", "a roller coaster", "a wooden chair", "a kite",
    "a river delta", "a city bus route", "a first day at work", "a moving day", "a birthday party",
    "a broken phone", "a spreadsheet budget", "a software bug", "a password policy", "a weather forecast",
    "a chatbot", "a translation app", "a museum visit", "a marathon", "a rain barrel", "a greenhouse",
]

NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jae", "Kofi", "Lena", "Mia",
         "Nour", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Viktor", "Wen", "Yara", "Zoe",
         "Amir", "Bea", "Carlos", "Dina", "Emil", "Farah", "Gus", "Hiro", "Ines", "Jonas", "Kira", "Luca",
         "Maya", "Nils", "Olga", "Pablo", "Rhea", "Sven", "Tara", "Ugo", "Vera", "Will", "Xena", "Yusuf", "Zara"]
