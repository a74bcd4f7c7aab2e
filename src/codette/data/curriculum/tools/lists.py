"""Which tool list a conversation shows, as deployed prompts show them.

The agent, ``codette serve`` and OpenAI or Ollama clients send every enabled tool, so most lists are
the agent's default tools in the tool table's order; some are all eleven, a client's few or one or
two, and some word the descriptions as other clients do. The shares are ``data.tool_mix``.
"""

from __future__ import annotations

import random

from codette.config import ToolMixConfig
from codette.tooltable import DEFAULT_TOOLS, SPECS, TOOL_NAMES, tool_schema


def tools_for(rng: random.Random, name: str | None, mix: ToolMixConfig) -> list[dict]:
    """The tool list the conversation shows: mostly what the agent sends (its default tools in order),
    sometimes all eleven, a client's few, or one or two; ``name`` is always among them.

    A no-tool question (``name`` None) gets the same lists, and must not call any of them.
    """
    r = rng.random()
    if r < mix.default_list and (name is None or name in DEFAULT_TOOLS):
        chosen = list(DEFAULT_TOOLS)
    elif r < mix.default_list + mix.all_list:  # also a tool off by default where the defaults were drawn
        chosen = list(TOOL_NAMES)
    else:
        k = rng.randint(1, 4) if r < mix.default_list + mix.all_list + mix.few_list else rng.randint(1, 2)
        others = [t for t in TOOL_NAMES if t != name]
        chosen = rng.sample(others, k - 1 if name else k) + ([name] if name else [])
        rng.shuffle(chosen)
    schemas = [tool_schema(t) for t in chosen]
    if rng.random() < mix.reworded:
        for sch in schemas:
            sch["function"]["description"] = rng.choice(SPECS[sch["function"]["name"]].rewordings)
    return schemas
