"""Tool conversations: the user asks, Codette calls a tool, the real result comes back, Codette answers.

Each scenario builds a small workspace *setup* (files, a CSV table, an image, a server clock), a
tool call that validates against the tool's schema, runs it for real through :class:`ToolRunner`,
and writes the answer from the parsed result, so the answer always agrees with what the tool said.
About one scenario in six is a failure (missing file, bad column, code that raises, a host that is
not allowed...) and the answer explains what went wrong; some questions need no tool at all.

Records carry ``tool`` (name or None), ``tool_arguments``, ``expected_result`` (the tool message
content), ``tool_ok``, ``setup`` and ``scenario`` in addition to the messages.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import re
from collections.abc import Callable
from typing import Any

from codette.data.curriculum.common import (NAMES, Sample, assistant, cap, fmt, fmt_big, join_words, user,
                                            with_agent_system)
from codette.data.curriculum.toolrun import CANONICAL_BASE, ToolRunner, compact_schema
from codette.persona import TOOL_PURPOSES, TOOLS
from codette.tools.image import NAMED_COLORS

# File and folder names come from a large space (about a million stems per extension), so a name in a
# held-out request is almost never one seen in training: copying it from the request is the only way
# to get it right. FILES/FOLDERS are kept for the everyday names people use most.
FILES = ["notes.txt", "todo.md", "report.txt", "plan.md", "ideas.txt", "log.txt", "readme.md", "draft.txt",
         "shopping.txt", "meeting.md", "journal.txt", "tasks.txt", "recipes.md", "travel.txt"]
FOLDERS = ["docs", "data", "archive", "photos", "drafts"]
STEM_WORDS = ["budget", "garden", "invoice", "lecture", "recipe", "trip", "project", "client", "summer", "winter",
              "notes", "draft", "review", "sprint", "minutes", "letter", "essay", "chapter", "thesis", "lab",
              "grocery", "packing", "reading", "workout", "menu", "guest", "party", "wedding", "tax", "rent",
              "car", "bike", "house", "kitchen", "school", "course", "exam", "story", "poem", "song",
              "config", "server", "backup", "release", "bug", "feature", "design", "sketch", "survey", "interview",
              "team", "board", "sales", "quarter", "annual", "weekly", "daily", "monthly", "old", "new",
              "final", "v2", "copy", "misc", "personal", "work", "home", "family", "pets", "plants"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ten", "vo", "qu", "zel", "bri", "dan", "fo", "gu", "hal", "ji", "nor", "pe",
             "sa", "tor", "ul", "wen", "xi", "yor", "mar", "lin", "ost", "ber"]
TEXT_EXTS = [".txt", ".md"]


def _stem(rng: random.Random) -> str:
    """A file or folder stem: one to three words or made-up words, joined, maybe with a number."""
    parts = []
    for _ in range(rng.choice([1, 1, 2, 2, 2, 3])):
        if rng.random() < 0.25:
            parts.append("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))))
        else:
            parts.append(rng.choice(STEM_WORDS))
    stem = rng.choice(["_", "-", "_", ""]).join(parts)
    r = rng.random()
    if r < 0.25:
        stem += rng.choice(["_", "-", ""]) + str(rng.randint(1, 99))
    elif r < 0.35:
        stem += "_" + str(rng.randint(2015, 2030))
    return stem


def _file(rng: random.Random, exts: list[str] | None = None) -> str:
    """A text file name: an everyday one (a quarter of the time) or a composed one."""
    if rng.random() < 0.25 and exts is None:
        return rng.choice(FILES)
    return _stem(rng) + rng.choice(exts or TEXT_EXTS)


def _files(rng: random.Random, n: int, exclude: str = "") -> list[str]:
    """``n`` distinct file names, none equal to ``exclude``."""
    names: list[str] = []
    while len(names) < n:
        f = _file(rng)
        if f != exclude and f not in names:
            names.append(f)
    return names


def _folder(rng: random.Random) -> str:
    return rng.choice(FOLDERS) if rng.random() < 0.25 else _stem(rng)


LINES = ["buy more coffee", "call the lab at noon", "finish the draft", "water the plants", "review the budget",
         "test the new sensor", "write the summary", "book the train", "email the landlord", "fix the bike brake",
         "pick up the parcel", "renew the passport", "plan the team lunch", "back up the laptop",
         "read chapter four", "pay the electricity bill", "clean the kitchen", "order new batteries",
         "send the invoice", "update the website", "prepare the slides", "walk the dog", "call grandma",
         "check the tyre pressure", "return the library books", "sort the photos", "practice the piano",
         "buy bread and eggs", "schedule the dentist", "measure the window"]
TABLES = [("sales.csv", "month", ["revenue", "units"]), ("weather.csv", "day", ["temperature", "rainfall"]),
          ("scores.csv", "student", ["score", "age"]), ("runs.csv", "date", ["distance", "minutes"]),
          ("prices.csv", "item", ["price", "stock"]), ("heights.csv", "name", ["height", "weight"]),
          ("traffic.csv", "hour", ["cars", "bikes"]), ("energy.csv", "week", ["kwh", "cost"])]
LABELS = {"month": ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug"],
          "day": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "student": NAMES[:8], "date": [
              "may-1", "may-2", "may-3", "may-4", "may-5", "may-6", "may-7"], "item": [
              "pen", "cup", "lamp", "book", "chair", "plate", "clock"], "name": NAMES[8:16],
          "hour": ["7h", "8h", "9h", "10h", "11h", "12h", "13h"], "week": ["w1", "w2", "w3", "w4", "w5", "w6", "w7"]}
CITIES = ["Paris", "Lagos", "Tokyo", "Lima", "Oslo", "Cairo", "Delhi", "Quito", "Seoul", "Perth", "Dublin",
          "Nairobi", "Madrid", "Hanoi", "Denver", "Toronto", "Manila", "Vienna", "Accra", "Santiago", "Austin",
          "Kyoto", "Porto", "Bergen", "Tunis", "Lyon", "Osaka", "Zurich", "Rabat", "Havana"]
SEARCHES = ["rotary position embeddings", "the GGUF file format", "llama.cpp", "running models with Ollama",
            "the history of the telescope", "what a transformer model is", "how bees communicate",
            "why the sky is blue", "how tides work", "what entropy means", "how vaccines train the immune system",
            "how solar panels work", "Newton's laws of motion", "Leonardo da Vinci", "byte-pair encoding",
            "SQLite full-text search", "the Python programming language", "photosynthesis", "the speed of light",
            "the period of a pendulum",
            # Other wordings of the same recorded pages (each still finds its page).
            "RoPE", "rotary embeddings in transformers", "GGUF", "the GGUF format for llama.cpp models",
            "running a model with llama.cpp", "how to use Ollama", "who invented the telescope", "telescope history",
            "the transformer architecture", "attention in transformers", "the waggle dance", "bee communication",
            "Rayleigh scattering", "what causes tides", "ocean tides and the moon", "entropy in physics",
            "how vaccines work", "photovoltaic cells", "solar power", "Newton's first law", "Leonardo's notebooks",
            "da Vinci's inventions", "byte pair encoding for tokenizers", "full-text search in SQLite",
            "how plants make sugar", "how fast light travels", "the speed of light in a vacuum", "how a pendulum swings"]
NO_RESULT_SEARCHES = ["xylophone repair shops", "best pizza in town", "football results", "knitting patterns",
                      "cheap flights to Rome", "concert tickets"]
BLOCKED_SITES = ["example.com", "news.example.org", "api.weather.com", "www.wikipedia.org", "github.com"]
WORDS = ["river", "planet", "garden", "codette", "python", "rocket", "violin", "lantern", "harbor", "meadow"]
IMAGE_FILES = ["photo.png", "logo.png", "chart.png", "scan.bmp", "icon.gif", "banner.png", "sketch.bmp"]
SIZES = [(16, 16), (32, 24), (64, 48), (48, 64), (100, 50), (120, 80), (80, 80), (200, 100)]

CALL_ERROR_SHARE = 0.17
# Which tool list a conversation shows, as deployed prompts show them (shares of tool samples):
DEFAULT_SET_SHARE = 0.55  # the agent's defaults: every tool but execute_python, in the persona's order
ALL_TOOLS_SHARE = 0.15  # all eleven (execute_python switched on)
SUBSET_SHARE = 0.2  # a client's few tools (1 to 4, shuffled); the rest: one or two tools
REWORDED_SHARE = 0.15  # of the lists: descriptions worded as another client words them
# The same tools (names and parameters) described in other words, as other clients send them.
REWORDED: dict[str, list[str]] = {
    "read_file": ["Return the contents of a file in the workspace.", "Open a file and read its text."],
    "write_file": ["Create or overwrite a file; append adds to its end.", "Save text to a file."],
    "list_directory": ["Show the entries of a directory.", "List the files and folders at a path."],
    "search_files": ["Search file names (pattern) or file contents (query).", "Look for files."],
    "execute_python": ["Execute a Python snippet and return its output.", "Run a Python program."],
    "calculator": ["Compute a math expression exactly.", "A calculator for arithmetic expressions."],
    "analyze_data": ["Compute a statistic of one column of a CSV file.", "Analyze tabular data."],
    "query_knowledge_base": ["Look up entries in the local knowledge base.", "Knowledge base search."],
    "http_request": ["Send a GET request to an allowed local URL.", "Fetch a URL from a local service."],
    "web_search": ["Search an offline web index for pages.", "Find web pages about a topic."],
    "analyze_image": ["Report an image's size and colours.", "Look at a picture file and describe it."],
}


def _call(name: str, arguments: dict[str, Any]) -> dict:
    return {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}]}


def _tool_msg(content: str) -> dict:
    return {"role": "tool", "content": content}


def _q(text: str) -> str:
    return f'"{text}"'


def tools_for(rng: random.Random, name: str | None) -> list[dict]:
    """The tool list the conversation shows: mostly what the agent sends (its default tools in order),
    sometimes all eleven, a client's few, or one or two; ``name`` is always among them.

    A no-tool question (``name`` None) gets the same lists, and must not call any of them.
    """
    defaults = [t for t in TOOLS if t != "execute_python"]
    r = rng.random()
    if r < DEFAULT_SET_SHARE and name != "execute_python":
        chosen = defaults
    elif r < DEFAULT_SET_SHARE + ALL_TOOLS_SHARE or (r < DEFAULT_SET_SHARE and name == "execute_python"):
        chosen = list(TOOLS)
    else:
        k = rng.randint(1, 4) if r < DEFAULT_SET_SHARE + ALL_TOOLS_SHARE + SUBSET_SHARE else rng.randint(1, 2)
        others = [t for t in TOOLS if t != name]
        chosen = rng.sample(others, k - 1 if name else k) + ([name] if name else [])
        rng.shuffle(chosen)
    schemas = [compact_schema(t) for t in chosen]
    if rng.random() < REWORDED_SHARE:
        for sch in schemas:
            sch["function"]["description"] = rng.choice(REWORDED[sch["function"]["name"]])
    return schemas


class Scenario:
    """What one tool conversation needs before the call runs; ``answer`` turns the result into text."""

    def __init__(self, name: str, variant: str, prompt: str, tool: str, arguments: dict[str, Any],
                 setup: dict[str, Any], answer: Callable[[Any, bool], str], slots: tuple) -> None:
        self.name, self.variant, self.prompt, self.tool = name, variant, prompt, tool
        self.arguments, self.setup, self.answer, self.slots = arguments, setup, answer, slots


LEADS = ["", "", "", "", "Hi! ", "Please help: ", "Quick one: ", "Hey Codette! ", "One more task. "]


def _build(rng: random.Random, runner: ToolRunner, sc: Scenario) -> Sample:
    li = rng.randrange(len(LEADS))
    result = runner.run(sc.setup, sc.tool, sc.arguments)
    answer = sc.answer(json.loads(result.content), result.ok)
    msgs = with_agent_system(rng, [user(LEADS[li] + sc.prompt), _call(sc.tool, sc.arguments),
                                   _tool_msg(result.content), assistant(answer)])
    meta = {"tool": sc.tool, "tool_arguments": sc.arguments, "expected_result": result.content,
            "tool_ok": result.ok, "setup": sc.setup, "scenario": sc.name}
    slots = (li, json.dumps(sc.setup, sort_keys=True), json.dumps(sc.arguments, sort_keys=True), *sc.slots)
    return Sample("tools", f"{sc.name}-{sc.variant}", slots, msgs, meta, tools=tools_for(rng, sc.tool))


def _pick(rng: random.Random, options: list[str]) -> tuple[int, str]:
    i = rng.randrange(len(options))
    return i, options[i]


def _text_file(rng: random.Random, k: int | None = None) -> str:
    return "".join(line + "\n" for line in rng.sample(LINES, k or rng.randint(1, 3)))


def _other_files(rng: random.Random, exclude: str, n: int) -> dict[str, str]:
    names = _files(rng, n, exclude)
    return {f: _text_file(rng, 1) for f in names}


# ------------------------------------------------------------------------------------------------
# Scenarios, one function per tool
# ------------------------------------------------------------------------------------------------
def calculator(rng: random.Random) -> Scenario:
    kind = rng.choice(["binary", "binary", "chain", "percent", "sqrt", "power", "error"])
    a, b, c = rng.randint(2, 999), rng.randint(2, 99), rng.randint(2, 50)
    if kind == "binary":
        op = rng.choice(["+", "-", "*", "/"])
        expr = f"{a} {op} {b}"
        pi, prompt = _pick(rng, ["What is {e}?", "Calculate {e}.", "Can you compute {e}?", "Please work out {e}.",
                                 "How much is {e}?", "Use the calculator for {e}."])
    elif kind == "chain":
        expr = rng.choice([f"({a} + {b}) * {c}", f"{a} * {b} - {c}", f"({a} - {b}) / {c}", f"{a} + {b} * {c}"])
        pi, prompt = _pick(rng, ["What is {e}?", "Calculate {e}.", "Evaluate {e} for me."])
    elif kind == "percent":
        p = rng.choice([5, 10, 12, 15, 20, 25, 30, 40, 75])
        expr = f"{a} * {p} / 100"
        pi, prompt = _pick(rng, [f"What is {p}% of {a}?", f"How much is {p} percent of {a}?"])
    elif kind == "sqrt":
        expr = f"sqrt({a})"
        pi, prompt = _pick(rng, [f"What is the square root of {a}?", f"Compute sqrt({a})."])
    elif kind == "power":
        k = rng.randint(2, 6)
        a = rng.randint(2, 40)
        expr = f"{a} ** {k}"
        pi, prompt = _pick(rng, [f"What is {a} to the power of {k}?", f"Calculate {a}^{k}."])
    else:
        expr = rng.choice([f"{a} / ({b} - {b})", f"sqrt(-{a})", f"log(0)", f"{a} % 0"])
        pi, prompt = _pick(rng, ["What is {e}?", "Calculate {e}."])
    prompt = prompt.replace("{e}", expr)
    ai = rng.randrange(3)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not compute {expr}: the calculator reports \"{data['error']}\". "
                    + ("Division by zero is undefined, so please check the divisor." if "zero" in data["error"]
                       else "The expression is outside the function's domain, so there is no real result."))
        r = data["result"]
        if isinstance(r, int):
            rs, approx = (f"{r:,}" if abs(r) >= 10000 else str(r)), ""
        else:
            rs, approx = fmt_big(r), ("about " if abs(float(fmt(r)) - r) > 1e-9 else "")
        first = f"{expr} is about {rs}." if approx else f"{expr} = {rs}."
        return [first, f"The result is {approx}{rs}.", f"The calculator gives {approx}{rs}."][ai]

    return Scenario("calculator", f"{kind}-{pi}-{ai}", prompt, "calculator", {"expression": expr}, {}, answer,
                    (kind,))


def read_file(rng: random.Random) -> Scenario:
    f = _file(rng)
    missing = rng.random() < CALL_ERROR_SHARE
    files = _other_files(rng, f, rng.randint(0 if not missing else 1, 2))
    if not missing:
        files[f] = _text_file(rng)
    pi, prompt = _pick(rng, ["What is in {f}?", "Read {f} for me.", "Show me the contents of {f}.",
                             "What does {f} say?", "Open {f} and tell me what it contains.", "Can you read {f}?"])
    ai = rng.randrange(2)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return [f"I could not read {f}: the tool says the file does not exist. Shall I list the workspace "
                    f"to find the right name?",
                    f"There is no file called {f} in the workspace, so there is nothing to read. Check the name, "
                    f"or ask me to list the files."][ai]
        lines = [ln for ln in data["content"].splitlines() if ln.strip()]
        quoted = join_words([_q(ln) for ln in lines])
        if len(lines) == 1:
            return [f"{f} contains one line: {quoted}.", f"{f} says: {quoted}."][ai]
        return [f"{f} has {len(lines)} lines: {quoted}.", f"Here is what {f} says: {quoted}."][ai]

    return Scenario("read_file", f"{int(missing)}-{pi}-{ai}", prompt.format(f=f), "read_file", {"path": f},
                    {"files": files}, answer, ())


def write_file(rng: random.Random) -> Scenario:
    f, line = _file(rng), rng.choice(LINES)
    kind = rng.choice(["new", "new", "replace", "append"] + (["outside"] if rng.random() < 0.5 else []))
    files = _other_files(rng, f, rng.randint(0, 1))
    args: dict[str, Any] = {"path": f, "content": line + "\n"}
    if kind == "append":
        files[f] = _text_file(rng, rng.randint(1, 2))
        args["append"] = True
        pi, prompt = _pick(rng, ["Add {l} to the end of {f}.", "Append {l} to {f}.", "Put {l} at the bottom of {f}."])
    elif kind == "outside":
        args["path"] = "../" + f
        pi, prompt = _pick(rng, ["Save {l} to ../{f}.", "Write {l} into ../{f}."])
    else:
        if kind == "replace":
            files[f] = _text_file(rng, 1)
        pi, prompt = _pick(rng, ["Save the line {l} to {f}.", "Write {l} into {f}.", "Create {f} with the text {l}.",
                                 "Please put {l} in a file called {f}."])
    prompt = prompt.format(f=f, l=_q(line))

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not write ../{f}: my file tools only work inside the workspace folder, and that path "
                    f"points outside it. I can save it as {f} inside the workspace instead.")
        n = data["bytes_written"]
        if data["appended"]:
            return f"Done: I appended {_q(line)} to {f} ({n} bytes)."
        if data["created"]:
            return f"Done: I created {f} and wrote {_q(line)} into it ({n} bytes)."
        return f"Done: {f} already existed, so I replaced its contents with {_q(line)} ({n} bytes)."

    return Scenario("write_file", f"{kind}-{pi}", prompt, "write_file", args, {"files": files}, answer, ())


def list_directory(rng: random.Random) -> Scenario:
    files = {f: _text_file(rng, 1) for f in _files(rng, rng.randint(1, 4))}
    dirs: list[str] = []
    kind = rng.choice(["root", "root", "folder", "missing"] if rng.random() < 2 * CALL_ERROR_SHARE else ["root", "folder"])
    folder = _folder(rng)
    if kind == "root" and rng.random() < 0.4:
        dirs.append(folder)
    if kind == "folder":
        for g in _files(rng, rng.randint(1, 3)):
            files[f"{folder}/{g}"] = _text_file(rng, 1)
    if kind == "root":
        pi, prompt = _pick(rng, ["Which files are in my workspace?", "List the files here.", "What files do I have?",
                                 "Show me what is in the workspace.", "What's in my workspace folder?"])
        path = "."
    else:
        pi, prompt = _pick(rng, ["What's in the {d} folder?", "List the files in {d}.", "Show me the {d} folder."])
        path = folder
    setup: dict[str, Any] = {"files": files}
    if dirs:
        setup["dirs"] = dirs

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"There is no folder named {folder} in the workspace, so I cannot list it. Shall I list the "
                    f"workspace itself?")
        entries = [e[:-1] + " (a folder)" if e.endswith("/") else e for e in data["entries"]]
        where = "Your workspace" if path == "." else f"The {folder} folder"
        if not entries:
            return f"{where} is empty."
        n = len(entries)
        return f"{where} has {n} item{'s' if n > 1 else ''}: {join_words(entries)}."

    return Scenario("list_directory", f"{kind}-{pi}", prompt.format(d=folder), "list_directory", {"path": path},
                    setup, answer, ())


def search_files(rng: random.Random) -> Scenario:
    names = _files(rng, rng.randint(2, 4))
    files = {f: _text_file(rng) for f in names}
    if rng.random() < 0.65:
        all_words = sorted({w for text in files.values() for w in re.findall(r"[a-z]{4,}", text)})
        hit = rng.random() < 0.85
        word = rng.choice(all_words) if hit else rng.choice([w for w in WORDS if w not in all_words])
        pi, prompt = _pick(rng, ["Which files mention {w}?", "Search my files for {w}.", "Where did I write about {w}?",
                                 "Find the lines that contain {w}."])
        prompt = prompt.format(w=_q(word))
        args: dict[str, Any] = {"query": word}

        def answer(data: Any, ok: bool) -> str:
            m = data["matches"]
            if not m:
                return f"No file in the workspace contains {_q(word)}."
            parts = [f"{x['path']} (line {x['line']}: {_q(x['text'])})" for x in m]
            return f"{_q(word)} appears in {join_words(parts)}."
        variant = f"query-{int(hit)}-{pi}"
    else:
        ext = rng.choice([".md", ".txt", ".csv"])
        pi, prompt = _pick(rng, ["Find all {x} files.", "Which {x} files do I have?", "Search for {x} files."])
        prompt = prompt.format(x=ext)
        args = {"pattern": "*" + ext}

        def answer(data: Any, ok: bool) -> str:
            found = data["files"]
            if not found:
                return f"There are no {ext} files in the workspace."
            return f"I found {len(found)} {ext} file{'s' if len(found) > 1 else ''}: {join_words(found)}."
        variant = f"pattern-{pi}"
    return Scenario("search_files", variant, prompt, "search_files", args, {"files": files}, answer, ())


def _py_task(rng: random.Random) -> tuple[str, str, str]:
    """(code, what it computes, kind) for a small computation."""
    kind = rng.choice(["sum", "squares", "factorial", "fib", "primes", "reverse", "sort", "count", "vowels"])
    n = rng.randint(3, 60)
    word = rng.choice(WORDS + [w.split()[-1] for w in LINES])
    if kind == "sum":
        return f"print(sum(range(1, {n + 1})))", f"the sum of the numbers from 1 to {n}", kind
    if kind == "squares":
        return f"print(sum(i * i for i in range(1, {n + 1})))", f"the sum of the squares from 1 to {n}", kind
    if kind == "factorial":
        n = min(n, 20)
        return f"import math; print(math.factorial({n}))", f"the factorial of {n}", kind
    if kind == "fib":
        return f"print(round(((1 + 5 ** 0.5) / 2) ** {min(n, 70)} / 5 ** 0.5))", f"Fibonacci number {min(n, 70)}", kind
    if kind == "primes":
        n = n * 5
        return (f"print(sum(all(k % d for d in range(2, k)) for k in range(2, {n})))",
                f"how many primes are below {n}", kind)
    if kind == "reverse":
        return f"print({word!r}[::-1])", f"{_q(word)} reversed", kind
    if kind == "sort":
        nums = [rng.randint(0, 99) for _ in range(rng.randint(3, 6))]
        return f"print(sorted({nums}))", f"the numbers {nums} in ascending order", kind
    if kind == "count":
        ch = rng.choice(sorted(set(word)))
        return f"print({word!r}.count({ch!r}))", f"how often {_q(ch)} occurs in {_q(word)}", kind
    return (f"print(sum(1 for c in {word!r} if c in 'aeiou'))", f"how many vowels {_q(word)} has", kind)


def _py_bug(rng: random.Random) -> tuple[str, str, str]:
    """(code, explanation, kind) for a snippet that raises."""
    kind = rng.choice(["value", "zero", "name", "index", "type"])
    word, n = rng.choice(WORDS), rng.randint(1, 99)
    if kind == "value":
        return f"print(int({word!r}))", f"{_q(word)} is not a number, so int() cannot convert it.", kind
    if kind == "zero":
        return f"print({n} / 0)", "dividing by zero is undefined; check the divisor.", kind
    if kind == "name":
        var = rng.choice(["total", "result", "count", "answer"])
        return f"print({var})", f"the name {_q(var)} was never defined; assign it before printing it.", kind
    if kind == "index":
        k = rng.randint(3, 9)
        return (f"print([1, 2, 3][{k}])",
                f"the list has only 3 items, so index {k} is out of range (valid indexes are 0 to 2).", kind)
    return f"print({word!r} + {n})", "a string and a number cannot be added; convert the number with str() first.", kind


def execute_python(rng: random.Random) -> Scenario:
    if rng.random() < CALL_ERROR_SHARE:
        code, why, kind = _py_bug(rng)
        pi, prompt = _pick(rng, ["Run this Python code: {c}", "What does this print? {c}", "Execute: {c}"])

        def answer(data: Any, ok: bool) -> str:
            if ok:
                return f"It printed {data['stdout'].strip()}."
            last = [ln for ln in data["stderr"].strip().splitlines() if ln.strip()][-1].strip()
            return f"The code failed with {last}. In plain words: {why}"
        return Scenario("execute_python", f"bug-{kind}-{pi}", prompt.format(c=code), "execute_python",
                        {"code": code}, {}, answer, ())
    if rng.random() < 0.25:
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        op = rng.choice(["*", "+", "-", "//", "%"])
        code = f"print({a} {op} {b})"
        pi, prompt = _pick(rng, ["Run this Python code: {c}", "What does this print? {c}", "Execute: {c}"])

        def answer_user(data: Any, ok: bool) -> str:
            return f"It printed {data['stdout'].strip()}." if ok else f"The code failed: {data['error']}."
        return Scenario("execute_python", f"user-{pi}", prompt.format(c=code), "execute_python", {"code": code}, {},
                        answer_user, ())
    code, what, kind = _py_task(rng)
    pi, prompt = _pick(rng, ["Use Python to find {w}.", "Run some Python to compute {w}.", "Write and run code for {w}.",
                             "Can you work out {w} with Python?"])
    ai = rng.randrange(2)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return f"The program failed: {data['error']}."
        out = data["stdout"].strip()
        return [f"The program printed {out}, so {what} is {out}.", f"Python says {what} is {out}."][ai]

    return Scenario("execute_python", f"task-{kind}-{pi}-{ai}", prompt.format(w=what), "execute_python",
                    {"code": code}, {}, answer, ())


_OPS = {"mean": ("average", "the average"), "max": ("highest", "the highest"), "min": ("lowest", "the lowest"),
        "sum": ("total", "the total"), "median": ("median", "the median")}


def analyze_data(rng: random.Random) -> Scenario:
    fname, label, cols = rng.choice(TABLES)
    if rng.random() < 0.75:  # the same kind of table under a composed name
        fname = _stem(rng) + ".csv"
    n = rng.randint(3, 7)
    labels = LABELS[label][:n]
    data_rows = [[rng.randint(1, 300) for _ in cols] for _ in labels]
    csv = ",".join([label, *cols]) + "\n" + "".join(
        ",".join([lab, *map(str, row)]) + "\n" for lab, row in zip(labels, data_rows))
    col = rng.choice(cols)
    kind = rng.choice(["op", "op", "op", "summary"] + (["missing"] if rng.random() < 3 * CALL_ERROR_SHARE else []))
    if kind == "missing":
        col = rng.choice([c for _, _, cs in TABLES for c in cs if c not in cols])
    op = rng.choice(list(_OPS))
    if kind == "summary":
        pi, prompt = _pick(rng, ["Summarise the {c} column of {f}.", "Give me statistics for {c} in {f}.",
                                 "Describe the {c} values in {f}."])
        args: dict[str, Any] = {"path": fname, "column": col}
    else:
        pi, prompt = _pick(rng, ["What is the {w} {c} in {f}?", "Find the {w} {c} in {f}.",
                                 "Using {f}, what is the {w} {c}?"])
        args = {"path": fname, "column": col, "operation": op}
    prompt = prompt.format(c=col, f=fname, w=_OPS[op][0])

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"{fname} has no column named {_q(col)}; its columns are {join_words([label, *cols])}. "
                    f"Did you mean one of {join_words(cols)}?")
        if kind == "summary":
            std = data["std"]
            return (f"{cap(col)} in {fname}: {data['count']} values, mean {fmt(data['mean'])}, min {data['min']}, "
                    f"max {data['max']}, median {fmt(data['median'])}"
                    + (f" and standard deviation {fmt(std)}." if std is not None else "."))
        r = data["result"]
        return f"{cap(_OPS[op][1])} {col} in {fname} is {fmt(r) if isinstance(r, float) else r} ({data['rows']} rows)."

    return Scenario("analyze_data", f"{kind}-{pi}", prompt, "analyze_data", args, {"files": {fname: csv}}, answer,
                    (op if kind != "summary" else "",))


def _first_sentence(text: str) -> str:
    text = text.replace(" … ", " ").strip(" …")
    m = re.search(r"^(.{30,}?[.;])(\s|$)", text)
    s = m.group(1) if m else text
    return s.rstrip(";") + ("" if s.endswith(".") else ".")


KB_TOPICS = [("the {p} perspective", "{k} perspective"), ("your {p} perspective", "{k} perspective")]
KB_OTHER = [("how you handle tool errors", "tool errors"), ("your limits", "Codette limits"),
            ("what Codette is", "what Codette is"), ("the Codette toolkit", "Codette toolkit"),
            ("your perspectives", "Codette perspectives"), ("your tools", "Codette tools")]


def query_knowledge_base(rng: random.Random) -> Scenario:
    from codette.data.curriculum.styles import STYLES

    kind = rng.choice(["perspective", "tool", "other"])
    if kind == "perspective":
        key = rng.choice(list(STYLES))
        subject = rng.choice(["the {p} perspective", "your {p} perspective"]).format(p=STYLES[key].phrase)
        query = f"{key} perspective"
    elif kind == "tool":
        t = rng.choice(TOOLS)
        subject, query = rng.choice(["the {t} tool", "your {t} tool"]).format(t=t), t
    else:
        subject, query = rng.choice(KB_OTHER)
    pi, prompt = _pick(rng, ["What does your knowledge base say about {s}?", "Look up {s} in your knowledge base.",
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
                             "Use the knowledge base.", "Knowledge base question: what about {s}?"])

    def answer(data: Any, ok: bool) -> str:
        res = data["results"]
        if not res:
            return f"My knowledge base has no entry about {subject}."
        return f"My knowledge base entry {_q(res[0]['title'])} says: {_first_sentence(res[0]['snippet'])}"

    return Scenario("query_knowledge_base", f"{kind}-{pi}", prompt.format(s=subject), "query_knowledge_base",
                    {"query": query, "top_k": 1}, {}, answer, ())


def http_request(rng: random.Random) -> Scenario:
    kind = rng.choice(["weather", "weather", "time", "echo"]
                      + (["blocked", "notfound"] if rng.random() < 2 * CALL_ERROR_SHARE else []))
    setup: dict[str, Any] = {}
    if kind == "weather":
        city = rng.choice(CITIES)
        pi, prompt = _pick(rng, ["What's the weather in {c}? Ask the local weather service.",
                                 "Check the local weather service for {c}.", "Get the weather for {c} from the local API."])
        prompt = prompt.format(c=city)
        args: dict[str, Any] = {"url": f"{CANONICAL_BASE}/weather", "params": {"city": city}}

        def answer(data: Any, ok: bool) -> str:
            w = data["json"]
            return (f"The local weather service reports {w['condition']} in {city}: {fmt(w['temperature_c'])} C, "
                    f"{w['humidity_pct']}% humidity and wind at {w['wind_kmh']} km/h. This is fixture data, "
                    f"not a real forecast.")
    elif kind == "time":
        clock = rng.randint(1_600_000_000, 1_800_000_000)
        setup["clock"] = clock
        pi, prompt = _pick(rng, ["What time does the local server say it is?", "Ask the local time service for the time.",
                                 "Get the current time from the local server."])
        args = {"url": f"{CANONICAL_BASE}/time"}

        def answer(data: Any, ok: bool) -> str:
            t = data["json"]
            when = dt.datetime.fromtimestamp(t["unix"], dt.timezone.utc)
            return (f"The server's clock reads {t['utc']}, that is {when:%H:%M} UTC on {when:%d %B %Y} "
                    f"(Unix time {t['unix']}).")
    elif kind == "echo":
        name, n = rng.choice(NAMES), rng.randint(1, 99)
        params = {"name": name, "count": str(n)}
        pi, prompt = _pick(rng, ["Send name={a} and count={n} to the local echo service.",
                                 "Ask the echo endpoint to repeat name={a}, count={n}."])
        prompt = prompt.format(a=name, n=n)
        args = {"url": f"{CANONICAL_BASE}/echo", "params": params}

        def answer(data: Any, ok: bool) -> str:
            return (f"The echo service answered with status {data['status']} and sent the parameters back: "
                    f"{json.dumps(data['json']['args'])}.")
    elif kind == "blocked":
        site = rng.choice(BLOCKED_SITES)
        pi, prompt = _pick(rng, ["Fetch https://{s}/ for me.", "Download the page at https://{s}/.",
                                 "Send a request to https://{s}/."])
        prompt = prompt.format(s=site)
        args = {"url": f"https://{site}/"}

        def answer(data: Any, ok: bool) -> str:
            return (f"I cannot reach {site}: my http_request tool only allows local hosts (localhost and "
                    f"127.0.0.1), so the request was refused before it was sent.")
    else:
        ep = rng.choice(["forecast", "news", "users", "status"])
        pi, prompt = _pick(rng, ["Get {u} for me.", "Call {u}."])
        prompt = prompt.format(u=f"{CANONICAL_BASE}/{ep}")
        args = {"url": f"{CANONICAL_BASE}/{ep}"}

        def answer(data: Any, ok: bool) -> str:
            return (f"The local service answered {data['error'].split(' from ')[0]}: it has no /{ep} endpoint. It "
                    f"offers /weather, /time and /echo.")
    return Scenario("http_request", f"{kind}-{pi}", prompt, "http_request", args, setup, answer, ())


def web_search(rng: random.Random) -> Scenario:
    hit = rng.random() > CALL_ERROR_SHARE / 2
    query = rng.choice(SEARCHES if hit else NO_RESULT_SEARCHES)
    pi, prompt = _pick(rng, ["Search the web for {q}.", "Look up {q} online.", "Find information about {q}.",
                             "What does the web say about {q}?", "Do a web search on {q}.",
                             "Can you search online for {q}?", "Search for {q}, please.", "Web search: {q}.",
                             "I need a web source on {q}.", "Find me a page about {q}.",
                             "Search online: {q}.", "Could you look up {q} on the web?", "Find a web page on {q}.",
                             "What can you find online about {q}?", "Please search the web for {q}.",
                             "Run a web search for {q}.", "Look for {q} on the web.", "Any web results on {q}?"])

    def answer(data: Any, ok: bool) -> str:
        res = data["results"]
        if not res:
            return f"The search found nothing about {query}. The offline collection is small; try other words."
        r = res[0]
        return f"According to {_q(r['title'])} ({r['url']}): {_first_sentence(r['snippet'])}"

    return Scenario("web_search", f"{int(hit)}-{pi}", prompt.format(q=query), "web_search",
                    {"query": query, "max_results": 1}, {}, answer, ())


def analyze_image(rng: random.Random) -> Scenario:
    f = rng.choice(IMAGE_FILES) if rng.random() < 0.25 else _stem(rng) + rng.choice([".png", ".png", ".bmp", ".gif"])
    fmt_name = {"png": "PNG", "bmp": "BMP", "gif": "GIF"}[f.rsplit(".", 1)[1]]
    colour = rng.choice(list(NAMED_COLORS))
    spec: dict[str, Any] = {"size": list(rng.choice(SIZES)), "fill": list(NAMED_COLORS[colour]), "format": fmt_name}
    if rng.random() < 0.3:
        other = rng.choice([c for c in NAMED_COLORS if c != colour])
        spec["band"] = {"color": list(NAMED_COLORS[other]), "fraction": rng.choice([0.1, 0.2, 0.3])}
    if fmt_name != "GIF" and rng.random() < 0.15:
        spec["mode"] = "L"
    broken = rng.random() < CALL_ERROR_SHARE
    setup: dict[str, Any] = {"files": {f: "this is not an image\n"}} if broken else {"images": {f: spec}}
    kind = rng.choice(["colour", "describe", "size", "gray"])
    pi, prompt = _pick(rng, {"colour": ["What colour is {f}?", "What is the main colour of {f}?"],
                             "describe": ["Describe the image {f}.", "Analyse {f} for me."],
                             "size": ["How big is {f}?", "What are the dimensions of {f}?"],
                             "gray": ["Is {f} a grayscale image?", "Is {f} black and white?"]}[kind])

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not analyse {f}: it is not an image file I can read. It may be a text file with an "
                    f"image name; check the file.")
        name, hx = data["dominant_name"], data["dominant_hex"]
        if kind == "colour":
            return f"The dominant colour of {f} is {name} ({hx})."
        if kind == "size":
            return f"{f} is {data['width']} x {data['height']} pixels ({data['format']})."
        if kind == "gray":
            return f"Yes, {f} is grayscale." if data["grayscale"] else f"No, {f} is in colour, mostly {name}."
        gray = ", in grayscale" if data["grayscale"] else ""
        return (f"{f} is a {data['width']} x {data['height']} {data['format']} image{gray}; its dominant colour "
                f"is {name} ({hx}).")

    return Scenario("analyze_image", f"{kind}-{int(broken)}-{pi}", prompt.format(f=f), "analyze_image", {"path": f},
                    setup, answer, ())


SCENARIOS: dict[str, Callable[[random.Random], Scenario]] = {
    "read_file": read_file, "write_file": write_file, "list_directory": list_directory,
    "search_files": search_files, "execute_python": execute_python, "calculator": calculator,
    "analyze_data": analyze_data, "query_knowledge_base": query_knowledge_base, "http_request": http_request,
    "web_search": web_search, "analyze_image": analyze_image,
}
NO_TOOL_SHARE = 0.08


def no_tool(rng: random.Random) -> Sample:
    """A question that needs no tool, asked while tools are available; answered directly."""
    kind = rng.choice(["greet", "thanks", "which", "parity", "repeat", "what", "compare"])
    name = rng.choice(NAMES)
    if kind == "greet":
        pi, prompt = _pick(rng, ["Hi, I'm {n}!", "Hello! My name is {n}.", "Good morning, I'm {n}.",
                                 "Hey there, {n} here.", "Good evening! I am {n}."])
        prompt = prompt.format(n=name)
        text = f"Hello, {name}! I'm Codette. No tool is needed to say hello; what can I do for you?"
        slots: tuple = (name,)
    elif kind == "thanks":
        pi, prompt = _pick(rng, ["Thanks, {n} here, that helped!", "Thank you! - {n}", "Great, thanks a lot. ({n})"])
        prompt = prompt.format(n=name)
        text = f"You're welcome, {name}! Ask me anytime."
        slots = (name,)
    elif kind == "which":
        t = rng.choice(TOOLS)
        pi, prompt = _pick(rng, ["Which tool would you use to {p}?", "If I asked you to {p}, which tool would you pick?"])
        prompt = prompt.format(p=TOOL_PURPOSES[t].replace("my local", "your local"))
        text = f"I would use {t}. You only asked which one, so I am not calling it now."
        slots = (t,)
    elif kind == "what":
        t = rng.choice(TOOLS)
        pi, prompt = _pick(rng, ["What does your {t} tool do?", "Explain the {t} tool."])
        prompt = prompt.format(t=t)
        text = f"{t} lets me {TOOL_PURPOSES[t]}. I call it when a question needs it."
        slots = (t,)
    elif kind == "parity":
        n = rng.randint(1, 100000)
        pi, prompt = _pick(rng, ["Is {n} even or odd?", "Is {n} an even number?"])
        prompt = prompt.format(n=n)
        text = (f"{n} is {'even' if n % 2 == 0 else 'odd'}: its last digit is {n % 10}. No tool is needed for that.")
        slots = (n,)
    elif kind == "compare":
        a, b = rng.sample(range(1, 10000), 2)
        pi, prompt = _pick(rng, ["Which is larger, {a} or {b}?", "Is {a} bigger than {b}?",
                                 "Which number is smaller: {a} or {b}?"])
        prompt = prompt.format(a=a, b=b)
        big, small = max(a, b), min(a, b)
        if pi == 1:
            verdict = f"Yes, {a} is larger than {b}." if a > b else f"No, {a} is smaller than {b}."
        else:
            verdict = f"{small} is smaller than {big}." if pi == 2 else f"{big} is larger than {small}."
        text = verdict + " Comparing two numbers needs no tool."
        slots = (a, b)
    else:
        line = rng.choice(LINES)
        pi, prompt = _pick(rng, ["Repeat after me: {l}", "Say this back to me: {l}"])
        prompt = prompt.format(l=line)
        text = f"{cap(line)}."
        slots = (line,)
    msgs = with_agent_system(rng, [user(prompt), assistant(text)])
    meta = {"tool": None, "tool_arguments": None, "expected_result": None, "tool_ok": None, "setup": {},
            "scenario": f"no_tool_{kind}"}
    return Sample("tools", f"none-{kind}-{pi}", slots, msgs, meta, tools=tools_for(rng, None))


# ------------------------------------------------------------------------------------------------
# Several calls: a chain inside one turn, or a follow-up turn that refers back
# ------------------------------------------------------------------------------------------------
CHAIN_SHARE = 0.12  # of tool conversations
FOLLOWUPS = [("Now double it.", "{r} * 2"), ("And times 3?", "{r} * 3"), ("now add 10 to that", "{r} + 10"),
             ("What is half of that?", "{r} / 2"), ("Subtract 7 from the result.", "{r} - 7"),
             ("and squared?", "{r} ** 2"), ("Divide that by 4.", "{r} / 4"), ("plus 100?", "{r} + 100")]


def _result_text(r: Any) -> str:
    return str(r) if isinstance(r, int) else fmt(r)


def _calls_sample(rng: random.Random, name: str, variant: str, turns: list[dict],
                  calls: list[tuple], setup: dict[str, Any], tools: list[dict] | None = None) -> Sample:
    """A conversation with several calls; ``meta`` lists them all (``chain``), and carries no single
    reference call, so the one-call probes leave it to the natural set's multi-turn items. A call is
    (tool, arguments, result) or, when each call has its own workspace, (tool, arguments, result, setup).
    ``tools``: the list shown (default: the agent's ten default tools)."""
    meta = {"tool": None, "tool_arguments": None, "expected_result": None, "tool_ok": None, "setup": setup,
            "scenario": name, "chain": [{"tool": c[0], "arguments": c[1], "result": c[2],
                                         **({"setup": c[3]} if len(c) > 3 else {})} for c in calls]}
    msgs = with_agent_system(rng, turns)
    return Sample("tools", f"{name}-{variant}", (json.dumps(setup, sort_keys=True),
                                                 json.dumps([list(c[:2]) for c in calls], sort_keys=True)),
                  msgs, meta, tools=tools or [compact_schema(t) for t in TOOLS if t != "execute_python"])


def followup(rng: random.Random, runner: ToolRunner) -> Sample:
    """A calculation, then a follow-up that refers back to its result ("now double it")."""
    a, b, op = rng.randint(2, 9999), rng.randint(2, 999), rng.choice(["+", "-", "*"])
    expr = f"{a} {op} {b}"
    pi, prompt = _pick(rng, ["What is {e}?", "Calculate {e}.", "{e} = ?", "how much is {e}", "Work out {e}, please."])
    first = runner.run({}, "calculator", {"expression": expr})
    r1 = json.loads(first.content)["result"]
    fi, (ask, template) = _pick(rng, FOLLOWUPS)  # type: ignore[arg-type]
    expr2 = template.format(r=_result_text(r1))
    second = runner.run({}, "calculator", {"expression": expr2})
    r2 = json.loads(second.content)["result"]
    turns = [user(prompt.format(e=expr)), _call("calculator", {"expression": expr}), _tool_msg(first.content),
             assistant(f"{expr} = {fmt_big(r1) if isinstance(r1, float) else r1}."), user(ask),
             _call("calculator", {"expression": expr2}), _tool_msg(second.content),
             assistant(f"{expr2} = {fmt_big(r2) if isinstance(r2, float) else r2}.")]
    return _calls_sample(rng, "followup", f"{pi}-{fi}", turns,
                         [("calculator", {"expression": expr}, first.content),
                          ("calculator", {"expression": expr2}, second.content)], {})


def list_then_read(rng: random.Random, runner: ToolRunner) -> Sample:
    """Two calls in one turn: list a folder, then read the one file it holds."""
    folder, name = _folder(rng), _file(rng)
    path = f"{folder}/{name}"
    setup = {"files": {path: _text_file(rng), **{f: _text_file(rng, 1) for f in _files(rng, rng.randint(0, 2))}}}
    pi, prompt = _pick(rng, ["Read the file in the {d} folder.", "What does the file in {d} say?",
                             "open whatever file is in {d}", "There is one file in {d}; what is in it?",
                             "Show me the contents of the file inside {d}."])
    listed = runner.run(setup, "list_directory", {"path": folder})
    read = runner.run(setup, "read_file", {"path": path})
    lines = [ln for ln in json.loads(read.content)["content"].splitlines() if ln.strip()]
    answer = f"The {folder} folder holds {name}, which says: {join_words([_q(ln) for ln in lines])}."
    turns = [user(prompt.format(d=folder)), _call("list_directory", {"path": folder}), _tool_msg(listed.content),
             _call("read_file", {"path": path}), _tool_msg(read.content), assistant(answer)]
    return _calls_sample(rng, "list_then_read", str(pi), turns,
                         [("list_directory", {"path": folder}, listed.content),
                          ("read_file", {"path": path}, read.content)], setup)


def table_then_calculate(rng: random.Random, runner: ToolRunner) -> Sample:
    """Two calls in one turn: a column's total from a table, then arithmetic on it."""
    fname, label, cols = rng.choice(TABLES)
    fname = _stem(rng) + ".csv"
    labels = LABELS[label][: rng.randint(3, 6)]
    col = rng.choice(cols)
    csv = ",".join([label, *cols]) + "\n" + "".join(
        ",".join([lab, *(str(rng.randint(1, 300)) for _ in cols)]) + "\n" for lab in labels)
    setup = {"files": {fname: csv}}
    k = rng.choice([2, 3, 4, 10, 12])
    pi, prompt = _pick(rng, ["What is the total {c} in {f} times {k}?", "Add up {c} in {f} and multiply by {k}.",
                             "sum the {c} column of {f}, then x{k}"])
    stats = runner.run(setup, "analyze_data", {"path": fname, "column": col, "operation": "sum"})
    total = json.loads(stats.content)["result"]
    expr = f"{_result_text(total)} * {k}"
    calc = runner.run({}, "calculator", {"expression": expr})
    r = json.loads(calc.content)["result"]
    turns = [user(prompt.format(c=col, f=fname, k=k)),
             _call("analyze_data", {"path": fname, "column": col, "operation": "sum"}), _tool_msg(stats.content),
             _call("calculator", {"expression": expr}), _tool_msg(calc.content),
             assistant(f"The total {col} in {fname} is {_result_text(total)}, and {expr} = {_result_text(r)}.")]
    return _calls_sample(rng, "table_then_calculate", f"{pi}-{k}", turns,
                         [("analyze_data", {"path": fname, "column": col, "operation": "sum"}, stats.content),
                          ("calculator", {"expression": expr}, calc.content)], setup)


# Copy drills: the tools whose calls carry the request's values verbatim and whose results are short.
DRILL_TOOLS = ["read_file", "list_directory", "calculator", "write_file", "search_files", "analyze_data",
               "analyze_image", "web_search"]
DRILL_ROUNDS = (3, 5)


def drill(rng: random.Random, runner: ToolRunner) -> Sample:
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
        sc = SCENARIOS[rng.choice(DRILL_TOOLS)](rng)
        result = runner.run(sc.setup, sc.tool, sc.arguments)
        turns += [user(sc.prompt), _call(sc.tool, sc.arguments), _tool_msg(result.content),
                  assistant(sc.answer(json.loads(result.content), result.ok))]
        calls.append((sc.tool, sc.arguments, result.content, sc.setup))
        used += [sc.tool] if sc.tool not in used else []
    shown = used + rng.sample([t for t in TOOLS if t not in used], rng.randint(0, 2))
    rng.shuffle(shown)
    variant = "-".join(c[0] for c in calls)
    return _calls_sample(rng, "drill", variant, turns, calls, {}, tools=[compact_schema(t) for t in shown])


CHAINS: dict[str, Callable[[random.Random, ToolRunner], Sample]] = {
    "followup": followup, "list_then_read": list_then_read, "table_then_calculate": table_then_calculate}
DRILL_SHARE = 0.3  # of tool conversations


def pick_tool(rng: random.Random) -> str:
    """Which kind of tool conversation to make: a tool name, ``"none"`` (a question that needs no tool),
    a chain of calls (a name in :data:`CHAINS`) or ``"drill"`` (several requests in a row)."""
    r = rng.random()
    if r < NO_TOOL_SHARE:
        return "none"
    if r < NO_TOOL_SHARE + CHAIN_SHARE:
        return rng.choice(list(CHAINS))
    if r < NO_TOOL_SHARE + CHAIN_SHARE + DRILL_SHARE:
        return "drill"
    return rng.choice(list(SCENARIOS))


def tool_sample(rng: random.Random, runner: ToolRunner, tool: str | None = None) -> Sample:
    """One tool conversation; ``tool`` (a name, ``"none"`` or a chain, see :func:`pick_tool`) fixes its kind."""
    tool = tool or pick_tool(rng)
    if tool == "none":
        return no_tool(rng)
    if tool in CHAINS:
        return CHAINS[tool](rng, runner)
    if tool == "drill":
        return drill(rng, runner)
    return _build(rng, runner, SCENARIOS[tool](rng))
