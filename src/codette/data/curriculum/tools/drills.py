"""Copy drills: several unrelated requests in a row, each answered by its own call, result and answer."""

from __future__ import annotations

import json
import random

from codette.config import ToolMixConfig
from codette.data.curriculum.common import Sample, assistant, user
from codette.data.curriculum.tools.base import call, calls_sample, tool_msg
from codette.data.curriculum.tools.scenarios import SCENARIOS
from codette.data.curriculum.toolrun import ToolRunner
from codette.tooltable import TOOL_NAMES, tool_schema


# The tools whose calls carry the request's values verbatim and whose results are short.
DRILL_TOOLS = ["read_file", "list_directory", "calculator", "write_file", "search_files", "analyze_data",
               "analyze_image", "web_search"]
DRILL_ROUNDS = (3, 5)


def drill(rng: random.Random, runner: ToolRunner, mix: ToolMixConfig) -> Sample:
    """Several unrelated requests in a row, each answered by its own call, result and answer.

    One request per conversation spends most of a training window on the (unlearned) system prompt;
    these multi-turn conversations carry 3 to 5 requests and their calls each, under a client's short
    tool list. (Measured by benchmarks/copy_probe.py, this chat form alone does not teach copying;
    see docs/TRAINING_GUIDE.md.)
    """
    turns: list[dict] = []
    calls: list[tuple] = []
    used: list[str] = []
    for _ in range(rng.randint(*DRILL_ROUNDS)):
        sc = SCENARIOS[rng.choice(DRILL_TOOLS)](rng, mix)
        result = runner.run(sc.setup, sc.tool, sc.arguments)
        turns += [user(sc.prompt), call(sc.tool, sc.arguments), tool_msg(result.content),
                  assistant(sc.answer(json.loads(result.content), result.ok))]
        calls.append((sc.tool, sc.arguments, result.content, sc.setup))
        used += [sc.tool] if sc.tool not in used else []
    shown = used + rng.sample([t for t in TOOL_NAMES if t not in used], rng.randint(0, 2))
    rng.shuffle(shown)
    variant = "-".join(c[0] for c in calls)
    return calls_sample(rng, "drill", variant, turns, calls, {}, tools=[tool_schema(t) for t in shown])
