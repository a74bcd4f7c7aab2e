"""Knowledge-base requests: a perspective, a tool or Codette itself, looked up in the local knowledge base."""

from __future__ import annotations

import random
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.styles import STYLES
from codette.data.curriculum.tools.base import Scenario, first_sentence, pick, quote
from codette.tooltable import TOOL_NAMES


KB_OTHER = [("how you handle tool errors", "tool errors"), ("your limits", "Codette limits"),
            ("what Codette is", "what Codette is"), ("the Codette toolkit", "Codette toolkit"),
            ("your perspectives", "Codette perspectives"), ("your tools", "Codette tools")]

# How people ask the knowledge base about ``{s}`` (also the copy documents' wording, codette.data.copydocs).
KB_PROMPTS = ["What does your knowledge base say about {s}?", "Look up {s} in your knowledge base.",
              "Check your knowledge base: what do you know about {s}?",
              "Query the knowledge base about {s}.", "Search your knowledge base for {s}.",
              "Use your knowledge base to tell me about {s}.", "Find {s} in the knowledge base.",
              "What is stored in your knowledge base about {s}?",
              "Consult your knowledge base on {s}.", "Knowledge base lookup, please: {s}.",
              "Is there anything in your knowledge base on {s}?", "Pull up {s} from your knowledge base.",
              "Your knowledge base: what is in it about {s}?", "Read me the knowledge base entry on {s}.",
              "Could you check the knowledge base for {s}?", "Search the knowledge base: {s}.",
              "What does the local knowledge base have on {s}?", "Look {s} up in the knowledge base.",
              "Tell me about {s}; use your knowledge base.", "Find the knowledge base entry for {s}.",
              "Please query your knowledge base about {s}.", "I'd like the knowledge base entry on {s}.",
              "Check the knowledge base about {s}, please.", "What do your notes say about {s}? "
              "Use the knowledge base.", "Knowledge base question: what about {s}?"]


def query_knowledge_base(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    kind = rng.choice(["perspective", "tool", "other"])
    if kind == "perspective":
        key = rng.choice(list(STYLES))
        subject = rng.choice(["the {p} perspective", "your {p} perspective"]).format(p=STYLES[key].phrase)
        query = f"{key} perspective"
    elif kind == "tool":
        t = rng.choice(TOOL_NAMES)
        subject, query = rng.choice(["the {t} tool", "your {t} tool"]).format(t=t), t
    else:
        subject, query = rng.choice(KB_OTHER)
    pi, prompt = pick(rng, KB_PROMPTS)

    def answer(data: Any, ok: bool) -> str:
        res = data["results"]
        if not res:
            return f"My knowledge base has no entry about {subject}."
        return f"My knowledge base entry {quote(res[0]['title'])} says: {first_sentence(res[0]['snippet'])}"

    return Scenario("query_knowledge_base", f"{kind}-{pi}", prompt.format(s=subject), "query_knowledge_base",
                    {"query": query, "top_k": 1}, {}, answer, ())
