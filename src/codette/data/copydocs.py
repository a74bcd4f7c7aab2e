"""Copy documents: plain text dense in copying the user's values, learned on every token (the ``copy`` source).

A conversation teaches one short copy (the call's value) after about 280 prompt tokens that are not
learned; ``benchmarks/copy_probe.py`` measured that chat data alone did not teach a small model to
copy, while documents of many request-and-call lines, learned on every token, did (see the training
guide's "Copying the user's values"). This module makes such documents for all eleven tools:

* a *call document* holds :data:`ITEMS_PER_DOC` items, one after another, each

  .. code-block:: text

      What is 37 * 91?
      <tool_call>
      {"name": "calculator", "arguments": {"expression": "37 * 91"}}
      </tool_call>
      {"expression": "37 * 91", "result": 3367}
      37 * 91 = 3367.

  a request in plain words (the curriculum's phrasings where it has them), the call exactly as the
  chat template writes an assistant's ``tool_calls``, the tool's real result (each call runs through
  :class:`~codette.data.curriculum.toolrun.ToolRunner` on a workspace built for it) and an answer that
  states the result verbatim. Every string and number in a call's arguments is written in the request
  before it, as the user wrote it (``37 * 91`` stays ``37 * 91``); the values are made-up words, file
  and folder names, 1-6 digit numbers, so they almost never repeat;
* a *persona document* (:data:`PERSONA_SHARE` of them) states the persona's facts, its perspectives
  and its tools (:mod:`codette.persona`, :mod:`codette.tooltable`) as plain text.

The records are ``{"text": ..., "category": "copy", "template": "calls" | "persona"}``; the packer
learns every token of a text record whatever ``data.assistant_only_loss`` says. ``codette data
--copy-docs N`` (``data.copy_docs``) or a ``copy`` entry of ``--mix`` adds them; the default data has
none. A seed gives the same documents.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from codette.data.curriculum.common import NAMES, join_words
from codette.data.curriculum.rough import STYLES as ROUGH_STYLES
from codette.data.curriculum.rough import roughen_text
from codette.data.curriculum.styles import STYLES
from codette.data.curriculum.toolrun import CANONICAL_BASE, ToolRunner
from codette.data.curriculum.tools import names
from codette.data.curriculum.tools.arithmetic import CALC_PROMPTS
from codette.data.curriculum.tools.base import LEADS, first_sentence, quote
from codette.data.curriculum.tools.files import (APPEND_PROMPTS, FOLDER_PROMPTS, READ_PROMPTS, SEARCH_PATTERN_PROMPTS,
                                                 SEARCH_TEXT_PROMPTS, WRITE_PROMPTS)
from codette.data.curriculum.tools.images import IMAGE_PROMPTS
from codette.data.curriculum.tools.knowledge import KB_OTHER, KB_PROMPTS
from codette.data.curriculum.tools.python import RUN_PROMPTS
from codette.data.curriculum.tools.tables import STAT_PROMPTS, SUMMARY_PROMPTS
from codette.data.curriculum.tools.web import SEARCH_PROMPTS, URL_PROMPTS
from codette.data.mix import COPY
from codette.errors import CodetteError
from codette.persona import (CAPABILITIES, KIND, LIMITS, NAME, PERSPECTIVE_MARK, PERSPECTIVE_VOCABULARY, PERSPECTIVES,
                             PURPOSE)
from codette.tools.calls import format_tool_call
from codette.tools.image import NAMED_COLORS
from codette.tooltable import ANALYSIS_OPERATIONS, SPECS, TOOL_NAMES

ITEMS_PER_DOC = (8, 14)  # items in a call document
PERSONA_SHARE = 0.05  # of the documents: the persona's facts, perspectives and tools as plain text
ROUGH_SHARE = 0.2  # of the requests: typed as people type (codette.data.curriculum.rough)
FAIL_SHARE = 0.1  # of read_file and list_directory requests: the file or folder is not there

# Made-up words: about 500 syllables, so two or three of them give about 10^5 to 10^8 words.
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
CODAS = ("", "", "", "n", "r", "s", "l", "k", "t", "m")
TEXT_EXTS = ("txt", "md", "csv", "json", "log", "py", "yaml", "tsv", "ini", "cfg", "xml", "html", "toml", "rst")
IMAGE_EXTS = ("png", "png", "bmp", "gif")
COLUMNS = sorted({c for _, _, cols in names.TABLES for c in cols})
# Tools are drawn in these proportions. An http_request call takes 25-60 ms (a new HTTP client per call, on
# a shared 2-core CPU) where the others take 1-15 ms, so it gets a third of an even share (about one
# document in three has one).
TOOL_WEIGHTS = {name: (0.35 if name == "http_request" else 1.0) for name in TOOL_NAMES}

# Phrasings the curriculum lacks (the copy probe's), beside the curriculum's own.
EXTRA_PROMPTS = {
    "read_file": ["Read {f}", "Open {f}", "Print the file {f}.", "{f}: what does it say?", "Show me {f}"],
    "list_directory": ["List {d}", "What files are in {d}?", "Which files does {d} hold?", "{d}: list it.",
                       "What is inside {d}?"],
    "calculator": ["Compute {e}", "{e} = ?", "Work out {e} for me.", "Please evaluate {e}", "Calculate {e}"],
    "analyze_data": ["Compute the {w} of {c} in {f}.", "What is the {w} of the {c} column in {f}?",
                     "{f}: {w} of {c}, please."],
    "query_knowledge_base": ["Knowledge base: {s}"],
    "web_search": ["Search: {q}"],
}
WEATHER_PROMPTS = ["What's the weather in {c}? Ask {u}.", "Get the weather for {c} from {u}.",
                   "Check {u} for the weather in {c}."]
ECHO_PROMPTS = ["Send name={a} and count={n} to {u}.", "Ask {u} to repeat name={a}, count={n}."]
TOP_K = [" Show the top {k}.", " At most {k}, please.", " Limit it to {k}."]
KB_TOPICS = ("tools", "perspectives", "limits", "files")  # after a made-up word in a knowledge-base query
WEB_TOPICS = ("the {w} festival", "how to grow {w}", "the history of {W}", "{W} recipes", "the {w} river",
              "who founded {W}")


# ---- values ---------------------------------------------------------------------------------------
def word(rng: random.Random) -> str:
    """A made-up word of two or three syllables."""
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(rng.randint(2, 3)))


def number(rng: random.Random, max_digits: int = 6) -> str:
    """A 1 to ``max_digits`` digit number, every length equally likely."""
    digits = rng.randint(1, max_digits)
    return str(rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10 ** digits - 1))


def made_up_stem(rng: random.Random) -> str:
    """A made-up word, often with a number or a second word (``vokukmik-46``, ``gigunget5``)."""
    s, r = word(rng), rng.random()
    if r < 0.4:
        s += rng.choice("-_") + number(rng, 4)
    elif r < 0.55:
        s += number(rng, 3)
    elif r < 0.7:
        s += rng.choice("-_") + word(rng)
    return s


def stem(rng: random.Random) -> str:
    """A file or folder stem: the curriculum's (words people use) or a made-up one."""
    return names.stem(rng) if rng.random() < 0.4 else made_up_stem(rng)


def file_name(rng: random.Random, exts: tuple[str, ...] = TEXT_EXTS) -> str:
    return f"{stem(rng)}.{rng.choice(exts)}"


def folder_name(rng: random.Random) -> str:
    return "/".join(stem(rng) for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))


def path_in_folder(rng: random.Random, exts: tuple[str, ...] = TEXT_EXTS) -> str:
    """A file name, a third of the time inside a folder."""
    name = file_name(rng, exts)
    return f"{folder_name(rng)}/{name}" if rng.random() < 0.33 else name


def line(rng: random.Random) -> str:
    """A line of a note: one the curriculum uses, or one with made-up words and numbers."""
    r = rng.random()
    if r < 0.1:
        return rng.choice(names.LINES)
    if r < 0.5:
        return f"{rng.choice(names.LINES)} {number(rng, 4)}"
    return " ".join(word(rng) if rng.random() < 0.7 else number(rng) for _ in range(rng.randint(2, 5)))


def expression(rng: random.Random) -> str:
    """Arithmetic as a user writes it: 1-6 digit numbers, the operators and spacing they chose."""
    sp = rng.choice((" ", " ", " ", ""))
    kind = rng.choice(("binary", "binary", "binary", "three", "paren", "power", "sqrt"))
    if kind == "power":
        return f"{rng.randint(2, 99)}{sp}{rng.choice(('**', '^'))}{sp}{rng.randint(2, 5)}"
    if kind == "sqrt":
        return f"sqrt({number(rng)})"

    def divisor() -> str:
        n = number(rng)
        return n if int(n) else str(rng.randint(1, 9))

    def term(op: str) -> str:
        return divisor() if op in ("/", "//", "%") else number(rng)

    ops = [rng.choice(("+", "-", "*", "/", "+", "-", "*", "//", "%")) for _ in range(1 if kind == "binary" else 2)]
    a, b = number(rng), term(ops[0])
    if kind == "binary":
        return f"{a}{sp}{ops[0]}{sp}{b}"
    c = term(ops[1])
    if kind == "paren":
        return f"({a}{sp}{ops[0]}{sp}{b}){sp}{ops[1]}{sp}{c}"
    return f"{a}{sp}{ops[0]}{sp}{b}{sp}{ops[1]}{sp}{c}"


# One-line snippets a user hands over (arithmetic twice as often); ``{d}`` is never 0.
SNIPPETS = ("print({a} {op} {d})", "print({a} {op} {d})", "print(len('{w}'))", "print('{w}'.upper())",
            "print('{w}'[::-1])", "print(sum(range(1, {b})))", "print(max({a}, {b}, {c}))", "print(sorted([{nums}]))",
            "print('{w}' * {k})", "print(round({a} / {d}, {k}))")


def python_code(rng: random.Random) -> str:
    """A one-line snippet: arithmetic, a string method, a sum, a sort, with fresh words and numbers."""
    d = number(rng, 4)
    return rng.choice(SNIPPETS).format(
        a=number(rng), b=number(rng, 4), c=number(rng), d=d if int(d) else "7", w=word(rng), k=rng.randint(2, 4),
        op=rng.choice(("+", "-", "*", "//", "%")), nums=", ".join(number(rng, 3) for _ in range(rng.randint(3, 6))))


def city(rng: random.Random) -> str:
    return rng.choice(names.CITIES) if rng.random() < 0.4 else word(rng).capitalize()


# ---- one item -------------------------------------------------------------------------------------
@dataclass
class CopyItem:
    """One request, its call, the tool's real result and the answer that states it."""

    tool: str
    request: str
    arguments: dict[str, Any]
    setup: dict[str, Any]
    result: str  # the tool message's content, exactly as the tool returned it
    answer: str

    def text(self) -> str:
        return "\n".join((self.request, format_tool_call(self.tool, self.arguments), self.result, self.answer))


def argument_values(arguments: dict[str, Any]) -> list[str]:
    """The strings and numbers of a call's arguments (nested ones too) as they must appear in the request;
    booleans (``append``) are said in words ("append ... to")."""
    out: list[str] = []
    for v in arguments.values():
        if isinstance(v, dict):
            out += argument_values(v)
        elif isinstance(v, str):
            out.append(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out.append(json.dumps(v))
    return out


def missing_values(request: str, arguments: dict[str, Any]) -> list[str]:
    """The call's values that the request does not contain verbatim (none in a good item)."""
    return [v for v in argument_values(arguments) if v not in request]


def _ask(rng: random.Random, tool: str, own: list[str], **values: str) -> str:
    """A request: one of the curriculum's phrasings (``own``) or the extra ones, with the values filled in."""
    return rng.choice(own + EXTRA_PROMPTS.get(tool, [])).format(**values)


def _limit(rng: random.Random, request: str, args: dict[str, Any], key: str, share: float, most: int) -> str:
    """Now and then (``share``) the user caps the results at 1 to ``most``: the count goes into the call
    (``args[key]``) and into the request, which is returned."""
    if rng.random() < share:
        args[key] = rng.randint(1, most)
        request += rng.choice(TOP_K).format(k=args[key])
    return request


def _read_file(rng: random.Random) -> tuple[str, dict, dict, Any]:
    f = path_in_folder(rng)
    setup: dict = {"files": {file_name(rng): line(rng) + "\n"}}
    if rng.random() >= FAIL_SHARE:
        setup["files"][f] = "".join(line(rng) + "\n" for _ in range(rng.randint(1, 2)))

    def answer(data: dict) -> str:
        if "error" in data:
            return f"There is no file called {f}: the tool says {data['error']}."
        return f"{f} says: {join_words([quote(ln) for ln in data['content'].splitlines()])}."
    return _ask(rng, "read_file", READ_PROMPTS, f=f), {"path": f}, setup, answer


def _write_file(rng: random.Random) -> tuple[str, dict, dict, Any]:
    f, text = path_in_folder(rng), line(rng)
    args: dict[str, Any] = {"path": f, "content": text}
    setup: dict = {"files": {}}
    if rng.random() < 0.3:
        setup["files"][f] = line(rng) + "\n"
        args["append"] = True
        request = _ask(rng, "write_file", APPEND_PROMPTS, f=f, l=quote(text))
    else:
        request = _ask(rng, "write_file", WRITE_PROMPTS, f=f, l=quote(text))

    def answer(data: dict) -> str:
        how = "appended" if data["appended"] else "wrote"
        return f"Done: I {how} {quote(text)} to {f} ({data['bytes_written']} bytes)."
    return request, args, setup, answer


def _list_directory(rng: random.Random) -> tuple[str, dict, dict, Any]:
    d = folder_name(rng)
    files: dict[str, str] = {file_name(rng): "x\n"}
    if rng.random() >= FAIL_SHARE:
        for _ in range(rng.randint(1, 4)):
            sub = f"{stem(rng)}/" if rng.random() < 0.2 else ""
            files[f"{d}/{sub}{file_name(rng)}"] = line(rng) + "\n"

    def answer(data: dict) -> str:
        if "error" in data:
            return f"I cannot list {d}: the tool says {data['error']}."
        return f"{d} holds {join_words(data['entries'])}."
    return _ask(rng, "list_directory", FOLDER_PROMPTS, d=d), {"path": d}, {"files": files}, answer


def _search_files(rng: random.Random) -> tuple[str, dict, dict, Any]:
    paths = [path_in_folder(rng) for _ in range(rng.randint(2, 4))]
    if rng.random() < 0.5:
        w = word(rng)
        hits = set(rng.sample(paths, rng.randint(0, min(2, len(paths)))))
        files = {p: (f"{line(rng)} {w}\n" if p in hits else line(rng) + "\n") for p in paths}
        args: dict[str, Any] = {"query": w}
        request = _ask(rng, "search_files", SEARCH_TEXT_PROMPTS, w=quote(w))

        def answer(data: dict) -> str:
            found = [f"{m['path']} (line {m['line']})" for m in data["matches"]]
            return f"{quote(w)} appears in {join_words(found)}." if found else f"No file contains {quote(w)}."
    else:
        if rng.random() < 0.5:
            ext = rng.choice(TEXT_EXTS)
            paths.append(f"{stem(rng)}.{ext}")
            pattern = f"*.{ext}"
        else:  # files whose names start with a word
            w = word(rng)
            paths += [f"{w}{rng.choice('-_')}{stem(rng)}.{rng.choice(TEXT_EXTS)}" for _ in range(rng.randint(0, 2))]
            pattern = f"{w}*"
        files = {p: line(rng) + "\n" for p in paths}
        args = {"pattern": pattern}
        request = _ask(rng, "search_files", SEARCH_PATTERN_PROMPTS, x=pattern)

        def answer(data: dict) -> str:
            return f"Files matching {pattern}: {join_words(data['files'])}." if data["files"] else \
                f"No file matches {pattern}."
    return request, args, {"files": files}, answer


def _execute_python(rng: random.Random) -> tuple[str, dict, dict, Any]:
    code = python_code(rng)

    def answer(data: dict) -> str:
        if data.get("exit_code") != 0:
            return f"The code failed: {data.get('error') or data.get('stderr', '').strip()}"
        return f"It printed {data['stdout'].strip()}."
    return rng.choice(RUN_PROMPTS).format(c=code), {"code": code}, {}, answer


def _calculator(rng: random.Random) -> tuple[str, dict, dict, Any]:
    e = expression(rng)
    i = rng.randrange(3)

    def answer(data: dict) -> str:
        if "error" in data:
            return f"I could not compute {e}: {data['error']}."
        r = json.dumps(data["result"])
        return [f"{e} = {r}.", f"The result is {r}.", f"The calculator gives {r}."][i]
    return _ask(rng, "calculator", CALC_PROMPTS, e=e), {"expression": e}, {}, answer


def _analyze_data(rng: random.Random) -> tuple[str, dict, dict, Any]:
    f = stem(rng) + ".csv"
    label = rng.choice(sorted(names.LABELS))
    cols = rng.sample(COLUMNS, 2) if rng.random() < 0.3 else [word(rng), word(rng)]
    if cols[0] == cols[1]:  # two made-up words that came out the same
        cols[1] += "2"
    labels = names.LABELS[label][:rng.randint(3, 7)]
    csv = ",".join([label, *cols]) + "\n" + "".join(
        ",".join([lab, *(number(rng, 4) for _ in cols)]) + "\n" for lab in labels)
    col = rng.choice(cols)
    if rng.random() < 0.25:
        args: dict[str, Any] = {"path": f, "column": col}
        request = rng.choice(SUMMARY_PROMPTS).format(c=col, f=f)

        def answer(data: dict) -> str:
            return (f"{col} in {f}: count {data['count']}, mean {data['mean']}, min {data['min']}, max {data['max']}, "
                    f"median {data['median']}, std {data['std']}.")
    else:
        op = rng.choice(ANALYSIS_OPERATIONS)
        args = {"path": f, "column": col, "operation": op}
        own = STAT_PROMPTS if op in ("mean", "sum", "min", "max", "median") else []
        request = _ask(rng, "analyze_data", own, w=op, c=col, f=f)

        def answer(data: dict) -> str:
            return f"The {op} of {col} in {f} is {json.dumps(data['result'])} ({data['rows']} rows)."
    return request, args, {"files": {f: csv}}, answer


def _drawn(rng: random.Random, *options: tuple[float, Callable[[], str]]) -> str:
    """The value of the first option whose cumulative bound exceeds one uniform draw (the last bound is 1)."""
    r = rng.random()
    return next(make for bound, make in options if r < bound or bound >= 1.0)()


def _search(rng: random.Random, tool: str, q: str, prompts: list[str], limit: tuple[str, float, int], empty: str,
            found: Callable[[list[dict]], str]) -> tuple[str, dict, dict, Any]:
    """A knowledge-base or web search for ``q``; ``limit`` is (argument, share, most) for :func:`_limit`; the
    answer is ``empty`` without results, else ``found(results)``."""
    args: dict[str, Any] = {"query": q}
    request = _limit(rng, _ask(rng, tool, prompts, s=q, q=q), args, *limit)
    return request, args, {}, lambda data: found(data["results"]) if data["results"] else empty


def _query_knowledge_base(rng: random.Random) -> tuple[str, dict, dict, Any]:
    # A third names what the knowledge base holds; the rest are a user's own words.
    q = _drawn(rng, (0.15, lambda: rng.choice(TOOL_NAMES)),
               (0.27, lambda: f"{rng.choice(list(PERSPECTIVES))} perspective"),
               (0.35, lambda: rng.choice(KB_OTHER)[1]),
               (1.0, lambda: f"{word(rng)} {rng.choice(KB_TOPICS + (word(rng), word(rng)))}"))
    # The default is 3 entries, each a long snippet: most requests ask for fewer.
    return _search(rng, "query_knowledge_base", q, KB_PROMPTS, ("top_k", 0.6, 2),
                   f"My knowledge base has no entry about {q}.",
                   lambda res: f"Entries: {join_words([quote(x['title']) for x in res])}. The first says: "
                               f"{first_sentence(res[0]['snippet'])}")


def _http_request(rng: random.Random) -> tuple[str, dict, dict, Any]:
    kind = rng.choice(("weather", "weather", "echo", "echo", "time"))
    setup: dict[str, Any] = {}
    if kind == "weather":
        c, u = city(rng), f"{CANONICAL_BASE}/weather"
        args: dict[str, Any] = {"url": u, "params": {"city": c}}
        request = rng.choice(WEATHER_PROMPTS).format(c=c, u=u)

        def answer(data: dict) -> str:
            w = data["json"]
            return (f"{u} reports {w['condition']} in {c}: {w['temperature_c']} C, {w['humidity_pct']}% humidity, "
                    f"wind {w['wind_kmh']} km/h (fixture data, not a real forecast).")
    elif kind == "echo":
        name, n, u = rng.choice(NAMES) if rng.random() < 0.3 else word(rng), number(rng, 4), f"{CANONICAL_BASE}/echo"
        args = {"url": u, "params": {"name": name, "count": n}}
        request = rng.choice(ECHO_PROMPTS).format(a=name, n=n, u=u)

        def answer(data: dict) -> str:
            return f"The echo service answered {data['status']} and sent back {json.dumps(data['json']['args'])}."
    else:
        setup["clock"] = rng.randint(1_600_000_000, 1_900_000_000)
        u = f"{CANONICAL_BASE}/time"
        args = {"url": u}
        request = rng.choice(URL_PROMPTS).format(u=u)

        def answer(data: dict) -> str:
            t = data["json"]
            when = dt.datetime.fromtimestamp(t["unix"], dt.timezone.utc)
            return f"The server's clock reads {t['utc']} (Unix time {t['unix']}), {when:%H:%M} UTC."
    return request, args, setup, answer


def _web_search(rng: random.Random) -> tuple[str, dict, dict, Any]:
    # The offline pages answer only their own topics; most searches are open.
    q = _drawn(rng, (0.3, lambda: rng.choice(names.SEARCHES)),
               (0.65, lambda: rng.choice(WEB_TOPICS).format(w=word(rng), W=word(rng).capitalize())),
               (1.0, lambda: f"{word(rng)} {number(rng, 4)}"))
    return _search(rng, "web_search", q, SEARCH_PROMPTS, ("max_results", 0.3, 3),
                   f"The search found nothing about {q}.",
                   lambda res: f"According to {quote(res[0]['title'])} ({res[0]['url']}): "
                               f"{first_sentence(res[0]['snippet'])}")


def _analyze_image(rng: random.Random) -> tuple[str, dict, dict, Any]:
    f = path_in_folder(rng, IMAGE_EXTS)
    fmt = {"png": "PNG", "bmp": "BMP", "gif": "GIF"}[f.rsplit(".", 1)[1]]
    colour = rng.choice(sorted(NAMED_COLORS))
    spec: dict[str, Any] = {"size": [rng.randint(4, 400), rng.randint(4, 400)], "fill": list(NAMED_COLORS[colour]),
                            "format": fmt}
    if rng.random() < 0.3:
        other = rng.choice([c for c in sorted(NAMED_COLORS) if c != colour])
        spec["band"] = {"color": list(NAMED_COLORS[other]), "fraction": rng.choice([0.1, 0.2, 0.3])}
    kind = rng.choice(sorted(IMAGE_PROMPTS))
    request = rng.choice(IMAGE_PROMPTS[kind]).format(f=f)

    def answer(data: dict) -> str:
        if kind == "colour":
            return f"The dominant colour of {f} is {data['dominant_name']} ({data['dominant_hex']})."
        if kind == "size":
            return f"{f} is {data['width']} x {data['height']} pixels ({data['format']})."
        if kind == "gray":
            return f"{'Yes' if data['grayscale'] else 'No'}: {f} has grayscale {json.dumps(data['grayscale'])}."
        return (f"{f} is a {data['width']} x {data['height']} {data['format']} image, mostly "
                f"{data['dominant_name']} ({data['dominant_hex']}).")
    return request, {"path": f}, {"images": {f: spec}}, answer


MAKERS = {"read_file": _read_file, "write_file": _write_file, "list_directory": _list_directory,
          "search_files": _search_files, "execute_python": _execute_python, "calculator": _calculator,
          "analyze_data": _analyze_data, "query_knowledge_base": _query_knowledge_base,
          "http_request": _http_request, "web_search": _web_search, "analyze_image": _analyze_image}


def _roughen(rng: random.Random, request: str, arguments: dict[str, Any]) -> str:
    """The request typed as people type it, now and then; the call's values are never touched."""
    if rng.random() >= ROUGH_SHARE:
        return request
    protected = {w.strip(".,!?:;\"'()") for v in argument_values(arguments) for w in v.split()}
    return roughen_text(rng, request, protected, rng.choice(ROUGH_STYLES))


def copy_item(rng: random.Random, runner: ToolRunner, tool: str) -> CopyItem:
    """One item for ``tool``: request, call (checked against both schemas), real result, answer."""
    request, args, setup, answer = MAKERS[tool](rng)
    if rng.random() < 0.15:
        request = rng.choice(LEADS[4:]) + request
    request = _roughen(rng, request, args)
    missing = missing_values(request, args)
    if missing:  # a generator bug, never the user's: every value is written into the request
        raise CodetteError(f"copy document: {tool} request {request!r} lacks the value {missing[0]!r}")
    result = runner.run(setup, tool, args)
    return CopyItem(tool, request, args, setup, result.content, answer(json.loads(result.content)))


# ---- persona documents -----------------------------------------------------------------------------
def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def persona_document(rng: random.Random) -> str:
    """The persona's facts, perspectives and tools as plain text, in a shuffled order."""
    facts = [f"I am {NAME}, {KIND}.", f"My purpose is {PURPOSE}.",
             f"I reason through eleven perspectives: {join_words(list(PERSPECTIVES.values()))}.",
             f"I can call eleven tools: {join_words(list(TOOL_NAMES))}."]
    facts += [_sentence(x) for x in LIMITS]
    facts += [_sentence(statement) for _, statement in CAPABILITIES.values()]
    rng.shuffle(facts)
    perspectives = []
    for key in rng.sample(list(PERSPECTIVES), len(PERSPECTIVES)):
        st = STYLES[key]
        vocab = ", ".join(sorted(rng.sample(sorted(PERSPECTIVE_VOCABULARY[key]), 4)))
        perspectives.append(f"{PERSPECTIVE_MARK} {key}: the {st.phrase} perspective ({PERSPECTIVES[key]}) brings "
                            f"{st.focus}. I choose it when {st.reason}. Its words: {vocab}. "
                            f"{rng.choice(st.openers)}")
    tools = []
    for name in rng.sample(list(TOOL_NAMES), len(TOOL_NAMES)):
        spec = SPECS[name]
        params = ", ".join(f"{p}: {t}" for p, t in spec.compact_parameters.items())
        tools.append(f"{name}({params}): {spec.compact_description} I use it to {spec.purpose}."
                     + ("" if spec.default else " It is off unless switched on."))
    sections = [" ".join(facts), "\n".join(perspectives), "\n".join(tools)]
    k = rng.randint(1, 3)
    return "\n\n".join(rng.sample(sections, k))


# ---- documents ------------------------------------------------------------------------------------
def copy_document(rng: random.Random, runner: ToolRunner) -> tuple[str, list[CopyItem]]:
    """A call document: its text and its items (tools drawn in :data:`TOOL_WEIGHTS`)."""
    tools = rng.choices(list(TOOL_WEIGHTS), weights=list(TOOL_WEIGHTS.values()), k=rng.randint(*ITEMS_PER_DOC))
    items = [copy_item(rng, runner, tool) for tool in tools]
    return "\n\n".join(item.text() for item in items), items


REPEAT_CHARS = 2000  # a repeat document's length: about 700 tokens, a window of the quickstart's context
REPEAT_VALUES: tuple[Callable[[random.Random], str], ...] = (word, file_name, number, expression, path_in_folder,
                                                             folder_name)


def repeat_document(rng: random.Random) -> str:
    """Lines of fresh values, each line written twice: the second copy is predictable only by looking back
    at the first, the pure form of what induction heads do (an induction warm-up, ``copy_stage.repeat_share``)."""
    lines: list[str] = []
    size = 0
    while size < REPEAT_CHARS:
        row = " ".join(rng.choice(REPEAT_VALUES)(rng) for _ in range(rng.randint(2, 6)))
        lines += [row, row, ""]
        size += 2 * len(row) + 3
    return "\n".join(lines).strip() + "\n"


def iter_copy_records(n: int, seed: int = 0, runner: ToolRunner | None = None,
                      repeat_share: float = 0.0) -> Iterator[dict]:
    """``n`` copy records: ``repeat_share`` of them repeat documents, :data:`PERSONA_SHARE` of the rest persona
    documents, the others call documents; the same seed and share give the same records."""
    if n < 0:
        raise CodetteError(f"config key 'data.copy_docs': expected an integer >= 0, got {n}")
    rng = random.Random(f"codette-copy-{seed}")
    own = runner is None
    runner = runner or ToolRunner()
    try:
        for _ in range(n):
            if repeat_share and rng.random() < repeat_share:
                yield {"text": repeat_document(rng), "category": COPY, "template": "repeat"}
            elif rng.random() < PERSONA_SHARE:
                yield {"text": persona_document(rng), "category": COPY, "template": "persona"}
            else:
                yield {"text": copy_document(rng, runner)[0], "category": COPY, "template": "calls"}
    finally:
        if own:
            runner.close()
