"""Which kind of tool conversation to make, in the shares of ``data.tool_mix``, and making it."""

from __future__ import annotations

import random

from codette.config import ToolMixConfig
from codette.data.curriculum.common import Sample
from codette.data.curriculum.tools.base import build
from codette.data.curriculum.tools.chains import CHAINS
from codette.data.curriculum.tools.drills import drill
from codette.data.curriculum.tools.no_tool import no_tool
from codette.data.curriculum.tools.scenarios import SCENARIOS
from codette.data.curriculum.toolrun import ToolRunner


def pick_tool(rng: random.Random, mix: ToolMixConfig) -> str:
    """Which kind of tool conversation to make: a tool name, ``"none"`` (a question that needs no tool),
    a chain of calls (a name in :data:`CHAINS`) or ``"drill"`` (several requests in a row)."""
    r = rng.random()
    if r < mix.no_tool:
        return "none"
    if r < mix.no_tool + mix.chain:
        return rng.choice(list(CHAINS))
    if r < mix.no_tool + mix.chain + mix.drill:
        return "drill"
    return rng.choice(list(SCENARIOS))


def tool_sample(rng: random.Random, runner: ToolRunner, mix: ToolMixConfig, tool: str | None = None) -> Sample:
    """One tool conversation; ``tool`` (a name, ``"none"`` or a chain, see :func:`pick_tool`) fixes its kind."""
    tool = tool or pick_tool(rng, mix)
    if tool == "none":
        return no_tool(rng, mix)
    if tool in CHAINS:
        return CHAINS[tool](rng, runner)
    if tool == "drill":
        return drill(rng, runner, mix)
    return build(rng, runner, SCENARIOS[tool](rng, mix), mix)
