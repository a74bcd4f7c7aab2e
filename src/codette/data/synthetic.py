"""Synthetic Codette conversations (data v1): perspectives, tools, identity, mixed reasoning.

Every sample is composed from a template and slot values chosen by a seeded RNG. A sample's
*key* is its (category, template, slot values) combination; samples are deduplicated by key, and
the train/val split is a hash of the key, so a validation conversation is a combination that never
occurs in training. Numbers in answers are computed here, never typed in.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from codette.data.facts import IDENTITY
from codette.data.facts import PERSPECTIVES as FACT_PERSPECTIVES
from codette.errors import CodetteError

# The four perspectives v1 writes about (all eleven are listed in facts.PERSPECTIVES).
PERSPECTIVES: dict[str, str] = {k: FACT_PERSPECTIVES[k] for k in ("newton", "davinci", "quantum_computing", "philosophical")}
SYSTEM_PROMPTS = [
    "You are Codette, a multi-perspective reasoning assistant that can call tools.",
    "You are Codette. Think from several perspectives and use tools when they help.",
    "You are Codette, a small language model. Answer clearly and honestly.",
]

CATEGORY_SHARES = {"perspectives": 0.30, "tools": 0.25, "consciousness": 0.25, "mixed": 0.20}

TOPICS = [
    "a bridge over a river", "a falling apple", "a bicycle", "a city garden", "a solar panel", "a violin",
    "a rainy afternoon", "a spinning top", "a paper airplane", "a lighthouse", "an ocean wave", "a clock",
    "a snowflake", "a wind turbine", "a library", "a beehive", "a mountain trail", "a cup of coffee",
    "a thunderstorm", "a chess game", "a telescope", "a rocket launch", "a forest fire", "a coral reef",
    "a traffic jam", "a heartbeat", "a musical scale", "a spider web", "a printing press", "a sailboat",
    "a volcano", "a rainbow", "a pendulum", "a glacier", "a market square", "a vaccine", "a new habit",
    "a difficult decision", "a team project", "a friendship", "a computer chip", "a map", "a seed",
]
OBJECTS = ["ball", "stone", "apple", "wrench", "book", "marble", "cup", "key", "coin", "shoe"]
NAMES = ["Ada", "Ben", "Chen", "Dara", "Eli", "Fatima", "Goran", "Hana", "Ivan", "Jae", "Kofi", "Lena", "Mia",
         "Nour", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tess", "Uma", "Viktor", "Wen", "Yara", "Zoe"]
FILES = ["notes.txt", "todo.md", "report.txt", "plan.md", "ideas.txt", "log.txt", "readme.md", "draft.txt"]
FILE_LINES = ["buy more coffee", "call the lab at noon", "finish the draft", "water the plants",
              "review the budget", "test the new sensor", "write the summary", "book the train"]
COLUMNS = ["temperature", "price", "score", "height", "speed", "weight", "rainfall", "duration"]
QUERIES = ["rotary position embeddings", "how GGUF files work", "the history of the telescope",
           "what a transformer model is", "how bees communicate", "why the sky is blue", "how tides work",
           "what entropy means", "how vaccines train the immune system", "how solar panels work"]

G = 9.81


@dataclass
class Sample:
    """One conversation plus the metadata the split, the stats and the evaluation need."""

    category: str
    template: str
    slots: tuple
    messages: list[dict]
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps([self.category, self.template, list(self.slots)], ensure_ascii=False)

    def to_json(self) -> dict:
        return {"messages": self.messages, "category": self.category, "template": self.template, **self.meta}


def _fmt(x: float) -> str:
    """Numbers as a person writes them: at most 2 decimals, no trailing zeros."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _conv(rng: random.Random, user: str, *turns: dict) -> list[dict]:
    msgs: list[dict] = []
    if rng.random() < 0.5:
        msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    msgs.append({"role": "user", "content": user})
    msgs.extend(turns)
    return msgs


def _assistant(content: str) -> dict:
    return {"role": "assistant", "content": content}


# ------------------------------------------------------------------------------------------------
# Perspectives
# ------------------------------------------------------------------------------------------------
PERSPECTIVE_ASKS = [
    "How would the {p} perspective see {t}?",
    "Explain {t} from the {p} perspective.",
    "Use your {p} perspective on {t}.",
    "What does {t} look like through the {p} lens?",
    "Give me a {p} view of {t}.",
]
PERSPECTIVE_STYLE: dict[str, list[str]] = {
    "newton": [
        "Let us reason from cause and effect. {T} obeys the same laws as everything else: forces act, "
        "energy is conserved, and every change has a measurable cause. Observe, measure, then predict.",
        "Start with the forces. In {t}, motion changes only when a net force acts, and every action has an "
        "equal and opposite reaction. Measure the quantities and the behaviour follows.",
    ],
    "davinci": [
        "Look at {t} as an artist and an engineer at once. Sketch its shape, notice how form follows "
        "function, and ask what a new design would borrow from nature.",
        "Imagine drawing {t}. Curiosity first: how is it built, why is it shaped this way, and what invention "
        "could grow from connecting it to something unrelated?",
    ],
    "quantum_computing": [
        "Think of {t} as a space of possibilities. Before we observe it, many outcomes are held at once with "
        "different probabilities, and the act of measuring selects one.",
        "Hold several states of {t} in superposition: each path has an amplitude, some reinforce and some "
        "cancel, and uncertainty is part of the description, not a flaw in it.",
    ],
    "philosophical": [
        "Ask what {t} means. What do we assume when we describe it, what is its purpose, and how would our "
        "understanding change if we questioned those assumptions?",
        "Consider the deeper questions in {t}: what is essential to it, what is only appearance, and what "
        "does it teach us about how we ought to live and think?",
    ],
}


def _perspective_sample(rng: random.Random) -> Sample:
    if rng.random() < 0.25:
        return _newton_numeric(rng)
    p = rng.choice(list(PERSPECTIVES))
    ask_i = rng.randrange(len(PERSPECTIVE_ASKS))
    style_i = rng.randrange(len(PERSPECTIVE_STYLE[p]))
    topic = rng.choice(TOPICS)
    user = PERSPECTIVE_ASKS[ask_i].format(p=PERSPECTIVES[p], t=topic)
    body = PERSPECTIVE_STYLE[p][style_i].format(t=topic, T=topic[0].upper() + topic[1:])
    answer = f"<perspective> {p}\n{body}"
    return Sample("perspectives", f"ask{ask_i}-style{style_i}", (p, topic),
                  _conv(rng, user, _assistant(answer)), {"perspective": p})


def _newton_numeric(rng: random.Random) -> Sample:
    obj = rng.choice(OBJECTS)
    h = rng.randint(1, 400)
    t = math.sqrt(2 * h / G)
    v = G * t
    user = f"Using Newton's perspective, how long does a {obj} dropped from {h} m take to land?"
    answer = (
        f"<perspective> newton\nIgnoring air resistance, the {obj} accelerates at g = 9.81 m/s^2. "
        f"From h = g t^2 / 2, t = sqrt(2 h / g) = sqrt(2 * {h} / 9.81) = {_fmt(t)} s. "
        f"It lands at v = g t = {_fmt(v)} m/s."
    )
    return Sample("perspectives", "newton-fall", (obj, h), _conv(rng, user, _assistant(answer)),
                  {"perspective": "newton"})


# ------------------------------------------------------------------------------------------------
# Tools: the call, the tool's result and an answer that agrees with it.
# ------------------------------------------------------------------------------------------------
def _call(name: str, arguments: dict) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def _tool_result(content: str) -> dict:
    return {"role": "tool", "content": content}


def _tool_sample(rng: random.Random) -> Sample:
    kind = rng.choice(["calc", "calc", "read", "list", "python", "data", "search", "notool"])
    return {"calc": _calc_sample, "read": _read_sample, "list": _list_sample, "python": _python_sample,
            "data": _data_sample, "search": _search_sample, "notool": _notool_sample}[kind](rng)


def _calc_sample(rng: random.Random) -> Sample:
    a, b = rng.randint(2, 999), rng.randint(2, 99)
    op = rng.choice(["+", "-", "*", "/"])
    expr = f"{a} {op} {b}"
    value = {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]
    ask = rng.choice(["What is {e}?", "Calculate {e} for me.", "Can you compute {e}?", "Please work out {e}."])
    user = ask.format(e=expr)
    result = json.dumps({"result": float(_fmt(value)) if op == "/" else value})
    msgs = _conv(rng, user, _call("calculator", {"expression": expr}), _tool_result(result),
                 _assistant(f"{expr} = {_fmt(value)}."))
    return Sample("tools", f"calc-{ask[:8]}", (a, op, b), msgs, {"tool": "calculator"})


def _read_sample(rng: random.Random) -> Sample:
    name = rng.choice(FILES)
    lines = rng.sample(FILE_LINES, 2)
    user = rng.choice(["What is in {f}?", "Read {f} and tell me what it says.", "Show me the contents of {f}."])
    content = "\n".join(lines)
    answer = f"{name} contains two lines: \"{lines[0]}\" and \"{lines[1]}\"."
    msgs = _conv(rng, user.format(f=name), _call("read_file", {"path": name}),
                 _tool_result(json.dumps({"path": name, "content": content})), _assistant(answer))
    return Sample("tools", f"read-{user[:6]}", (name, *lines), msgs, {"tool": "read_file"})


def _list_sample(rng: random.Random) -> Sample:
    files = sorted(rng.sample(FILES, rng.randint(2, 4)))
    user = rng.choice(["Which files are in my workspace?", "List the files here.", "What files do I have?"])
    answer = f"Your workspace has {len(files)} files: {', '.join(files)}."
    msgs = _conv(rng, user, _call("list_directory", {"path": "."}),
                 _tool_result(json.dumps({"entries": files})), _assistant(answer))
    return Sample("tools", f"list-{user[:6]}", tuple(files), msgs, {"tool": "list_directory"})


def _python_sample(rng: random.Random) -> Sample:
    n = rng.randint(3, 30)
    fn = rng.choice(["sum", "squares", "factorial"])
    code = {"sum": f"print(sum(range(1, {n + 1})))",
            "squares": f"print(sum(i * i for i in range(1, {n + 1})))",
            "factorial": f"import math\nprint(math.factorial({min(n, 15)}))"}[fn]
    value = {"sum": n * (n + 1) // 2, "squares": n * (n + 1) * (2 * n + 1) // 6,
             "factorial": math.factorial(min(n, 15))}[fn]
    what = {"sum": f"the sum of 1 to {n}", "squares": f"the sum of the squares of 1 to {n}",
            "factorial": f"the factorial of {min(n, 15)}"}[fn]
    user = f"Run Python to find {what}."
    msgs = _conv(rng, user, _call("execute_python", {"code": code}),
                 _tool_result(json.dumps({"stdout": f"{value}\n", "exit_code": 0})),
                 _assistant(f"The code printed {value}, so {what} is {value}."))
    return Sample("tools", f"python-{fn}", (n,), msgs, {"tool": "execute_python"})


def _data_sample(rng: random.Random) -> Sample:
    col = rng.choice(COLUMNS)
    values = [rng.randint(1, 99) for _ in range(rng.randint(3, 6))]
    mean = sum(values) / len(values)
    name = f"{col}.csv"
    user = f"What is the average {col} in {name}?"
    result = json.dumps({"rows": len(values), "column": col, "mean": round(mean, 2),
                         "min": min(values), "max": max(values)})
    answer = f"{name} has {len(values)} rows; the average {col} is {_fmt(mean)} (min {min(values)}, max {max(values)})."
    msgs = _conv(rng, user, _call("analyze_data", {"path": name, "column": col}), _tool_result(result),
                 _assistant(answer))
    return Sample("tools", "data-mean", (col, *values), msgs, {"tool": "analyze_data"})


def _search_sample(rng: random.Random) -> Sample:
    q = rng.choice(QUERIES)
    n = rng.randint(1, 3)
    titles = [f"{q.capitalize()} - part {i + 1}" for i in range(n)]
    user = rng.choice(["Search the web for {q}.", "Look up {q}.", "Find pages about {q}."]).format(q=q)
    result = json.dumps({"source": "offline-fixture", "results": [{"title": t} for t in titles]})
    answer = f"I found {n} result{'s' if n > 1 else ''} about {q}: " + "; ".join(titles) + "."
    msgs = _conv(rng, user, _call("web_search", {"query": q}), _tool_result(result), _assistant(answer))
    return Sample("tools", f"search-{user[:6]}", (q, n), msgs, {"tool": "web_search"})


def _notool_sample(rng: random.Random) -> Sample:
    name = rng.choice(NAMES)
    user = f"My name is {name}. Do you need a tool to greet me?"
    answer = f"No tool is needed for that. Hello, {name}! It is good to meet you."
    return Sample("tools", "notool-greet", (name,), _conv(rng, user, _assistant(answer)), {"tool": None})


# ------------------------------------------------------------------------------------------------
# Consciousness: self-reference, identity, intentionality. Many phrasings, one set of facts.
# ------------------------------------------------------------------------------------------------
IDENTITY_QA: dict[str, tuple[list[str], list[str]]] = {
    "identity": (
        ["Who are you?", "What are you?", "Tell me about yourself.", "What is your name?", "Introduce yourself.",
         "Are you a person?", "What kind of system are you?"],
        ["I am {name}, {kind}. I reason through several perspectives: {perspectives}.",
         "My name is {name}. I am {kind}, not a person, and I think through {perspectives} perspectives."],
    ),
    "self_reference": (
        ["How do you reason?", "Which perspectives can you use?", "What tools do you have?",
         "What are your limits?", "Can you make mistakes?", "Describe how you think."],
        ["I am {name}. I look at a question through {perspectives} perspectives and combine them. "
         "My tools are {tools}. {limits_cap}.",
         "As {name}, I reflect on my own reasoning: I pick the perspectives that fit, "
         "and I use {tools} when a fact needs checking. {limits_cap}."],
    ),
    "intentionality": (
        ["What is your purpose?", "What do you want to do?", "Why do you exist?", "What are your goals?",
         "What do you intend when you answer?"],
        ["My purpose is {purpose}. I am {name}, and I intend to be honest about what I know and what I do not.",
         "I aim {purpose}. As {name}, I say when I am unsure, because {limits}."],
    ),
}
IDENTITY_PREFIXES = ["", "Hi! ", "Quick question: ", "I'm curious. ", "Hello Codette. ", "Be honest: "]


def _consciousness_sample(rng: random.Random) -> Sample:
    aspect = rng.choice(list(IDENTITY_QA))
    asks, answers = IDENTITY_QA[aspect]
    ai, bi, pi = rng.randrange(len(asks)), rng.randrange(len(answers)), rng.randrange(len(IDENTITY_PREFIXES))
    facts = {**IDENTITY, "limits_cap": IDENTITY["limits"][0].upper() + IDENTITY["limits"][1:]}
    who = rng.choice([None, *NAMES])
    intro = f"I'm {who}. " if who else ""
    greet = f"Nice to meet you, {who}. " if who else ""
    user = IDENTITY_PREFIXES[pi] + intro + asks[ai]
    answer = "<consciousness> " + greet + answers[bi].format(**facts)
    system = rng.random() < 0.5
    msgs = ([{"role": "system", "content": rng.choice(SYSTEM_PROMPTS)}] if system else []) + [
        {"role": "user", "content": user}, _assistant(answer)]
    return Sample("consciousness", f"{aspect}-{ai}-{bi}", (pi, who, system), msgs, {"aspect": aspect})


# ------------------------------------------------------------------------------------------------
# Mixed reasoning: 2-3 perspectives, then a synthesis.
# ------------------------------------------------------------------------------------------------
SHORT_VIEWS = {
    "newton": "the forces and causes in {t} can be measured and predicted",
    "davinci": "the design of {t} invites sketches and new inventions",
    "quantum_computing": "{t} holds several possible outcomes until we look closely",
    "philosophical": "{t} raises questions about meaning and purpose",
}


def _mixed_sample(rng: random.Random) -> Sample:
    k = rng.randint(2, 3)
    chosen = rng.sample(list(PERSPECTIVES), k)
    topic = rng.choice(TOPICS)
    ask = rng.choice(["Think about {t} from several perspectives.", "Give me a multi-perspective analysis of {t}.",
                      "Combine your perspectives on {t}."])
    parts = [f"<perspective> {p}\n{PERSPECTIVES[p]}: {SHORT_VIEWS[p].format(t=topic)}." for p in chosen]
    names = " and ".join(PERSPECTIVES[p] for p in chosen)
    synthesis = f"Synthesis: together, the {names} views show that {topic} is both understood and still open to discovery."
    msgs = _conv(rng, ask.format(t=topic), _assistant("\n".join(parts) + "\n" + synthesis))
    return Sample("mixed", f"mixed-{ask[:8]}", (tuple(chosen), topic), msgs, {"perspectives": chosen})


GENERATORS: dict[str, Callable[[random.Random], Sample]] = {
    "perspectives": _perspective_sample,
    "tools": _tool_sample,
    "consciousness": _consciousness_sample,
    "mixed": _mixed_sample,
}


# ------------------------------------------------------------------------------------------------
# Dataset assembly
# ------------------------------------------------------------------------------------------------
def _dialogue_text(s: Sample) -> str:
    """The conversation without its system prompt, for counting truly different samples."""
    return json.dumps([m for m in s.messages if m["role"] != "system"], ensure_ascii=False, sort_keys=True)


def is_val_key(key: str, val_fraction: float) -> bool:
    """Deterministic split by the sample's combination key (stable across runs and seeds)."""
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return (h % 10_000) < val_fraction * 10_000


@dataclass
class DatasetStats:
    requested: int
    generated: int
    distinct: int
    train: int
    val: int
    shares: dict[str, float]
    overlap: int  # validation keys that also occur in train: 0 by construction
    distinct_texts: int  # conversations whose user+assistant text differs from every other one

    @property
    def distinct_ratio(self) -> float:
        """Distinct conversation texts / samples (1.0 = no two samples say the same thing)."""
        return self.distinct_texts / max(1, self.distinct)


def generate(n: int, seed: int = 0, val_fraction: float = 0.1,
             shares: dict[str, float] | None = None) -> tuple[list[Sample], list[Sample], DatasetStats]:
    """``n`` distinct conversations in the configured category shares, split train/val by key.

    Categories are scheduled by exact quota (not sampled), so shares are exact up to rounding.
    A candidate whose key already exists is redrawn; when the template space of a category is too
    small for its quota the error says so instead of looping forever.
    """
    shares = shares or CATEGORY_SHARES
    if abs(sum(shares.values()) - 1.0) > 1e-6:
        raise CodetteError(f"category shares must sum to 1, got {sum(shares.values()):.3f}")
    if n <= 0:
        raise CodetteError("number of samples must be positive")
    rng = random.Random(seed)
    quotas = {c: int(round(n * s)) for c, s in shares.items()}
    quotas[max(quotas, key=lambda c: shares[c])] += n - sum(quotas.values())
    seen: set[str] = set()
    samples: list[Sample] = []
    attempts = 0
    for cat, quota in quotas.items():
        made, misses = 0, 0
        while made < quota:
            s = GENERATORS[cat](rng)
            attempts += 1
            if s.key in seen:
                misses += 1
                if misses > 50 * quota + 1000:
                    raise CodetteError(
                        f"category {cat!r} ran out of distinct combinations after {made} samples; "
                        f"ask for fewer samples (asked {n})")
                continue
            seen.add(s.key)
            samples.append(s)
            made += 1
    rng.shuffle(samples)
    train = [s for s in samples if not is_val_key(s.key, val_fraction)]
    val = [s for s in samples if is_val_key(s.key, val_fraction)]
    counts = Counter(s.category for s in samples)
    train_keys = {s.key for s in train}
    stats = DatasetStats(
        requested=n, generated=attempts, distinct=len(samples), train=len(train), val=len(val),
        shares={c: counts[c] / len(samples) for c in shares},
        overlap=sum(1 for s in val if s.key in train_keys),
        distinct_texts=len({_dialogue_text(s) for s in samples}),
    )
    return train, val, stats
