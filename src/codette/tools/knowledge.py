"""query_knowledge_base: full-text search (SQLite FTS5, BM25 ranking) over a small local corpus.

The index lives in memory and is built from (title, text) entries, from a folder of ``.md``/``.txt``
files, or by default from :data:`CODETTE_KNOWLEDGE`, the facts Codette knows about itself. Queries
are reduced to quoted word terms joined with OR, so no user text can ever be read as FTS5 syntax
(quotes, parentheses, ``AND``, ``NEAR``, ``*`` and ``column:`` are all plain words or dropped).
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from codette.errors import CodetteError
from codette.tools.base import ToolFailure

log = logging.getLogger(__name__)

MAX_QUERY_TERMS = 32
MAX_DOC_BYTES = 1024 * 1024
_WORD = re.compile(r"\w+", re.UNICODE)

PERSPECTIVE_FACTS: dict[str, str] = {
    "newton": "The newton perspective reasons from cause and effect like a physicist: it names the forces, "
              "quantities and conservation laws involved, measures, and predicts. Codette uses it for physical "
              "questions and for anything that can be calculated, such as how long a dropped object takes to "
              "land (t = sqrt(2h/g) with g = 9.81 m/s^2).",
    "davinci": "The davinci perspective looks at a problem as an artist and an engineer at once, after Leonardo "
               "da Vinci: it sketches the shape of things, notices how form follows function, and looks for "
               "inventive connections between unrelated fields, often borrowing designs from nature.",
    "human_intuition": "The human_intuition perspective considers how a situation feels to the people in it: "
                       "empathy, lived experience, gut reactions and the social context, to complement purely "
                       "analytical answers.",
    "quantum_computing": "The quantum_computing perspective treats a problem as a space of possibilities held "
                         "at once, like a superposition: it weighs several outcomes with their probabilities, "
                         "accepts uncertainty as part of the description, and considers how observation or a "
                         "decision selects one outcome.",
    "philosophical": "The philosophical perspective asks what things mean: it examines assumptions, purposes, "
                     "ethics and definitions, and asks how an answer would change if those assumptions were "
                     "questioned.",
    "neural_network": "The neural_network perspective thinks in patterns learned from examples: it looks for "
                      "features, correlations and generalisation, and is careful about overfitting and about "
                      "how representative the data is.",
    "bias_mitigation": "The bias_mitigation perspective checks an answer for fairness: it looks for "
                       "stereotypes, missing viewpoints, unequal treatment and skewed data, and suggests more "
                       "balanced and inclusive alternatives.",
    "psychological": "The psychological perspective considers motivation, emotion, cognitive biases and "
                     "behaviour: why people think and act as they do, and how that shapes the problem and its "
                     "solutions.",
    "copilot": "The copilot perspective is practical and collaborative: it breaks a task into concrete steps, "
               "suggests the next action, writes or reviews code, and keeps the user in control of decisions.",
    "mathematical": "The mathematical perspective formalises a problem: it defines variables, writes equations, "
                    "proves or checks results, and computes exact answers, using the calculator or Python tools "
                    "when numbers must be right.",
    "symbolic": "The symbolic perspective reasons with symbols, rules and logic: it represents knowledge as "
                "explicit facts and relations and derives conclusions step by step, so each inference can be "
                "checked.",
}

TOOL_FACTS: dict[str, str] = {
    "read_file": "read_file(path) reads a text file inside the workspace folder; large files are truncated at "
                 "64 KiB and the result says so.",
    "write_file": "write_file(path, content, append?) creates or replaces a text file inside the workspace.",
    "list_directory": "list_directory(path?, recursive?) lists the files and folders of a workspace folder.",
    "search_files": "search_files(pattern?, query?, path?) finds workspace files by glob pattern and lines "
                    "containing a text query, with line numbers.",
    "execute_python": "execute_python(code) runs a Python snippet in a separate process with a time limit "
                      "(5 seconds by default) and a memory limit, and returns stdout, stderr and the exit code.",
    "calculator": "calculator(expression) evaluates arithmetic safely: + - * / // % **, parentheses, and "
                  "functions such as sqrt, sin, cos, log and exp, with constants pi and e.",
    "analyze_data": "analyze_data(path, column?, operation?) summarises a CSV or JSON table: row count, "
                    "columns, and count, mean, standard deviation, min, max and median of numeric columns.",
    "query_knowledge_base": "query_knowledge_base(query) searches Codette's local knowledge base and returns "
                            "the best matching entries with a snippet.",
    "http_request": "http_request(url, method?) sends a GET or POST request, but only to allowlisted hosts "
                    "(by default the local machine).",
    "web_search": "web_search(query) searches a configured local search service, or an offline collection "
                  "of recorded pages when none is configured; it never reaches the open internet by itself.",
    "analyze_image": "analyze_image(path) reports an image's format, size, colour mode, mean colour, dominant "
                     "colour and whether it is grayscale.",
}

CODETTE_KNOWLEDGE: list[tuple[str, str]] = [
    ("What Codette is",
     "Codette is a small language model trained with the Codette toolkit. It is a multi-perspective "
     "reasoning assistant: it can look at a question through eleven perspectives and it can call tools. "
     "It runs locally, for example with llama.cpp or Ollama."),
    ("The Codette toolkit",
     "The Codette toolkit trains small language models on a laptop CPU: it builds a tokenizer and a "
     "dataset, trains a small transformer, evaluates it, and exports it to GGUF for llama.cpp and Ollama."),
    ("Codette's perspectives",
     "Codette has eleven perspectives: newton, davinci, human_intuition, quantum_computing, philosophical, "
     "neural_network, bias_mitigation, psychological, copilot, mathematical and symbolic. It marks a "
     "perspective in its answer with the <perspective> tag."),
    *[(f"Perspective: {name}", text) for name, text in PERSPECTIVE_FACTS.items()],
    ("Codette's tools",
     "Codette can call eleven tools: " + ", ".join(TOOL_FACTS) + ". A tool call is written as "
     "<tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call> and the result comes back in a tool message."),
    *[(f"Tool: {name}", text) for name, text in TOOL_FACTS.items()],
    ("Codette's limits",
     "Codette is a small model and can be wrong, so it checks facts and numbers with its tools when it can. "
     "It does not remember past conversations, it only reaches the outside world through its tools, file "
     "tools only work inside the workspace folder, and it says so when a tool fails."),
    ("How Codette handles tool errors",
     "When a tool returns an error (a missing file, a bad expression, a timeout), Codette explains the error "
     "to the user in plain words and suggests what to try instead, rather than inventing a result."),
]


def sanitize_query(query: str) -> str | None:
    """An FTS5 MATCH expression that cannot be a syntax error: quoted word terms joined with OR.

    Returns None when the query has no searchable word at all.
    """
    terms: list[str] = []
    for word in _WORD.findall(query.lower()):
        if word not in terms:
            terms.append(word)
    if not terms:
        return None
    return " OR ".join(f'"{t}"' for t in terms[:MAX_QUERY_TERMS])


class KnowledgeBase:
    """An in-memory FTS5 index of titled documents; thread-safe for concurrent queries."""

    def __init__(self, entries: Iterable[tuple[str, str]] = ()) -> None:
        self._lock = threading.Lock()
        self._db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            self._db.execute("CREATE VIRTUAL TABLE docs USING fts5(title, body, source UNINDEXED, "
                             "tokenize='porter unicode61')")
        except sqlite3.OperationalError as exc:
            raise CodetteError(f"this Python's SQLite has no FTS5 full-text search ({exc})") from None
        self.add_entries(entries)

    @classmethod
    def default(cls) -> KnowledgeBase:
        """The built-in knowledge about Codette itself."""
        return cls(CODETTE_KNOWLEDGE)

    @classmethod
    def from_folder(cls, folder: Path | str, include_default: bool = False) -> KnowledgeBase:
        """Index every ``.md``/``.txt`` file under ``folder``; the title is the first heading or the file name."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CodetteError(f"knowledge base folder {folder} does not exist")
        kb = cls(CODETTE_KNOWLEDGE if include_default else ())
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() not in (".md", ".txt") or not p.is_file():
                continue
            if p.stat().st_size > MAX_DOC_BYTES:
                log.warning("knowledge base: skipping %s (larger than %d bytes)", p, MAX_DOC_BYTES)
                continue
            text = p.read_text(encoding="utf-8", errors="replace")
            title = p.stem
            for line in text.splitlines():
                if line.strip():
                    if line.lstrip().startswith("#"):
                        title = line.lstrip("# ").strip() or title
                    break
            kb.add(title, text, source=p.relative_to(folder).as_posix())
        return kb

    def add(self, title: str, text: str, source: str = "") -> None:
        with self._lock:
            self._db.execute("INSERT INTO docs(title, body, source) VALUES (?, ?, ?)", (title, text, source))

    def add_entries(self, entries: Iterable[tuple[str, str]]) -> None:
        for title, text in entries:
            self.add(title, text)

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM docs").fetchone()[0])

    def search(self, query: str, top_k: int = 3) -> list[dict[str, Any]]:
        """The ``top_k`` best matches (BM25, title weighted 5x): title, snippet and source."""
        match = sanitize_query(query)
        if match is None:
            return []
        sql = ("SELECT title, snippet(docs, 1, '', '', ' … ', 40), source, bm25(docs, 5.0, 1.0) AS score "
               "FROM docs WHERE docs MATCH ? ORDER BY score, rowid LIMIT ?")
        with self._lock:
            try:
                rows = self._db.execute(sql, (match, top_k)).fetchall()
            except sqlite3.OperationalError as exc:  # defensive: sanitize_query should make this impossible
                raise ToolFailure(f"knowledge base query failed: {exc}") from None
        out = []
        for title, snippet, source, score in rows:
            item: dict[str, Any] = {"title": title, "snippet": snippet}
            if source:
                item["source"] = source
            out.append(item)
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()


def query_knowledge_base(kb: KnowledgeBase, query: str, top_k: int = 3) -> dict[str, Any]:
    """Tool entry point."""
    if sanitize_query(query) is None:
        raise ToolFailure("the query has no words to search for")
    results = kb.search(query, top_k)
    return {"query": query, "results": results}
