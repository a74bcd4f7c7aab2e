"""Reading a user's own data: plain-text files/folders and JSONL chat files.

Every problem is reported as a :class:`CodetteError` that names the file (and line for JSONL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from codette.errors import CodetteError
from codette.tokenizer.chat_template import validate_messages

TEXT_SUFFIXES = {".txt", ".md", ".text"}


@dataclass
class Document:
    """Either plain ``text`` or a chat ``messages`` list (with optional ``tools``)."""

    source: str
    text: str | None = None
    messages: list[dict] | None = None
    tools: list[dict] | None = None


def _read_text(path: Path, errors: str = "strict") -> str:
    if not path.exists():
        raise CodetteError(f"data file not found: {path}")
    raw = path.read_bytes()
    if not raw.strip():
        raise CodetteError(f"data file is empty: {path}")
    if b"\x00" in raw[:8192]:
        raise CodetteError(f"{path} looks binary (contains NUL bytes); expected UTF-8 text")
    try:
        return raw.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CodetteError(
            f"{path}:{line}: invalid UTF-8 at byte {exc.start}; convert the file to UTF-8 "
            f"or pass --errors replace") from None


def read_jsonl_conversations(path: Path, errors: str = "strict") -> Iterator[Document]:
    """One document per line: ``{"messages": [...], "tools": [...]?}`` (chat) or ``{"text": "..."}``."""
    text = _read_text(path, errors)
    found = False
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CodetteError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if isinstance(obj, dict) and isinstance(obj.get("text"), str) and "messages" not in obj:
            found = True
            yield Document(source=where, text=obj["text"])
            continue
        if not isinstance(obj, dict) or "messages" not in obj:
            raise CodetteError(f"{where}: expected an object with a 'messages' list (or a 'text' string)")
        validate_messages(obj["messages"], where)
        if not any(m["role"] == "assistant" for m in obj["messages"]):
            raise CodetteError(f"{where}: conversation has no assistant turn, so there is nothing to learn")
        found = True
        yield Document(source=where, messages=obj["messages"], tools=obj.get("tools"))
    if not found:
        raise CodetteError(f"{path} contains no conversations")


def iter_documents(path: Path | str, errors: str = "strict") -> Iterator[Document]:
    """Documents from a ``.jsonl`` chat file, a text file, or a folder of text/JSONL files."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | {".jsonl"})
        if not files:
            raise CodetteError(f"folder {path} has no .txt, .md or .jsonl files")
        for f in files:
            yield from iter_documents(f, errors)
        return
    if path.suffix.lower() == ".jsonl":
        yield from read_jsonl_conversations(path, errors)
        return
    if not path.exists():
        raise CodetteError(f"data file not found: {path}")
    if path.suffix.lower() not in TEXT_SUFFIXES:
        raise CodetteError(f"{path}: unsupported data file type {path.suffix!r}; use .txt, .md or .jsonl")
    yield Document(source=str(path), text=_read_text(path, errors))
