"""File requests: read, write, list and search files in the workspace, and the calls that fail."""

from __future__ import annotations

import random
import re
from typing import Any

from codette.config import ToolMixConfig
from codette.data.curriculum.common import join_words
from codette.data.curriculum.tools.base import Scenario, pick, quote
from codette.data.curriculum.tools.names import LINES, WORDS, file_name, file_names, folder_name, other_files, text_file

# How people ask (module-level so that the copy documents, codette.data.copydocs, word requests the same way).
READ_PROMPTS = ["What is in {f}?", "Read {f} for me.", "Show me the contents of {f}.", "What does {f} say?",
                "Open {f} and tell me what it contains.", "Can you read {f}?"]
WRITE_PROMPTS = ["Save the line {l} to {f}.", "Write {l} into {f}.", "Create {f} with the text {l}.",
                 "Please put {l} in a file called {f}."]
APPEND_PROMPTS = ["Add {l} to the end of {f}.", "Append {l} to {f}.", "Put {l} at the bottom of {f}."]
FOLDER_PROMPTS = ["What's in the {d} folder?", "List the files in {d}.", "Show me the {d} folder."]
SEARCH_TEXT_PROMPTS = ["Which files mention {w}?", "Search my files for {w}.", "Where did I write about {w}?",
                       "Find the lines that contain {w}."]
SEARCH_PATTERN_PROMPTS = ["Find all {x} files.", "Which {x} files do I have?", "Search for {x} files."]


def read_file(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    f = file_name(rng)
    missing = rng.random() < mix.call_error
    files = other_files(rng, f, rng.randint(0 if not missing else 1, 2))
    if not missing:
        files[f] = text_file(rng)
    pi, prompt = pick(rng, READ_PROMPTS)
    ai = rng.randrange(2)

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return [f"I could not read {f}: the tool says the file does not exist. Shall I list the workspace "
                    f"to find the right name?",
                    f"There is no file called {f} in the workspace, so there is nothing to read. Check the name, "
                    f"or ask me to list the files."][ai]
        lines = [ln for ln in data["content"].splitlines() if ln.strip()]
        quoted = join_words([quote(ln) for ln in lines])
        if len(lines) == 1:
            return [f"{f} contains one line: {quoted}.", f"{f} says: {quoted}."][ai]
        return [f"{f} has {len(lines)} lines: {quoted}.", f"Here is what {f} says: {quoted}."][ai]

    return Scenario("read_file", f"{int(missing)}-{pi}-{ai}", prompt.format(f=f), "read_file", {"path": f},
                    {"files": files}, answer, ())


def write_file(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    f, line = file_name(rng), rng.choice(LINES)
    kind = rng.choice(["new", "new", "replace", "append"] + (["outside"] if rng.random() < 0.5 else []))
    files = other_files(rng, f, rng.randint(0, 1))
    args: dict[str, Any] = {"path": f, "content": line + "\n"}
    if kind == "append":
        files[f] = text_file(rng, rng.randint(1, 2))
        args["append"] = True
        pi, prompt = pick(rng, APPEND_PROMPTS)
    elif kind == "outside":
        args["path"] = "../" + f
        pi, prompt = pick(rng, ["Save {l} to ../{f}.", "Write {l} into ../{f}."])
    else:
        if kind == "replace":
            files[f] = text_file(rng, 1)
        pi, prompt = pick(rng, WRITE_PROMPTS)
    prompt = prompt.format(f=f, l=quote(line))

    def answer(data: Any, ok: bool) -> str:
        if not ok:
            return (f"I could not write ../{f}: my file tools only work inside the workspace folder, and that path "
                    f"points outside it. I can save it as {f} inside the workspace instead.")
        n = data["bytes_written"]
        if data["appended"]:
            return f"Done: I appended {quote(line)} to {f} ({n} bytes)."
        if data["created"]:
            return f"Done: I created {f} and wrote {quote(line)} into it ({n} bytes)."
        return f"Done: {f} already existed, so I replaced its contents with {quote(line)} ({n} bytes)."

    return Scenario("write_file", f"{kind}-{pi}", prompt, "write_file", args, {"files": files}, answer, ())


def list_directory(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    files = {f: text_file(rng, 1) for f in file_names(rng, rng.randint(1, 4))}
    dirs: list[str] = []
    kind = rng.choice(["root", "root", "folder", "missing"] if rng.random() < 2 * mix.call_error else ["root", "folder"])
    folder = folder_name(rng)
    if kind == "root" and rng.random() < 0.4:
        dirs.append(folder)
    if kind == "folder":
        for g in file_names(rng, rng.randint(1, 3)):
            files[f"{folder}/{g}"] = text_file(rng, 1)
    if kind == "root":
        pi, prompt = pick(rng, ["Which files are in my workspace?", "List the files here.", "What files do I have?",
                                "Show me what is in the workspace.", "What's in my workspace folder?"])
        path = "."
    else:
        pi, prompt = pick(rng, FOLDER_PROMPTS)
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


def search_files(rng: random.Random, mix: ToolMixConfig) -> Scenario:
    names = file_names(rng, rng.randint(2, 4))
    files = {f: text_file(rng) for f in names}
    if rng.random() < 0.65:
        all_words = sorted({w for text in files.values() for w in re.findall(r"[a-z]{4,}", text)})
        hit = rng.random() < 0.85
        word = rng.choice(all_words) if hit else rng.choice([w for w in WORDS if w not in all_words])
        pi, prompt = pick(rng, SEARCH_TEXT_PROMPTS)
        prompt = prompt.format(w=quote(word))
        args: dict[str, Any] = {"query": word}

        def answer(data: Any, ok: bool) -> str:
            m = data["matches"]
            if not m:
                return f"No file in the workspace contains {quote(word)}."
            parts = [f"{x['path']} (line {x['line']}: {quote(x['text'])})" for x in m]
            return f"{quote(word)} appears in {join_words(parts)}."
        variant = f"query-{int(hit)}-{pi}"
    else:
        ext = rng.choice([".md", ".txt", ".csv"])
        pi, prompt = pick(rng, SEARCH_PATTERN_PROMPTS)
        prompt = prompt.format(x=ext)
        args = {"pattern": "*" + ext}

        def answer(data: Any, ok: bool) -> str:
            found = data["files"]
            if not found:
                return f"There are no {ext} files in the workspace."
            return f"I found {len(found)} {ext} file{'s' if len(found) > 1 else ''}: {join_words(found)}."
        variant = f"pattern-{pi}"
    return Scenario("search_files", variant, prompt, "search_files", args, {"files": files}, answer, ())
