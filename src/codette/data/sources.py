"""Reading a user's own data: text files/folders, JSONL chat, Hugging Face datasets, parquet and JSON.

Everything streams: text files are read in 1 MiB chunks and cut into documents at paragraph (then
line) boundaries, JSONL is read line by line and dataset rows one at a time, so memory does not grow
with the size of a corpus. Every problem is a :class:`CodetteError` naming the file and line (or
dataset row); with ``skip_bad`` a bad JSONL line or row is counted in a :class:`ReadReport` instead.
``datasets`` is imported only when a dataset folder, ``.parquet`` or ``.json`` source is used.
"""

from __future__ import annotations

import codecs
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from codette.data.validate import validate_record
from codette.errors import CodetteError
from codette.jsonl import iter_lines, parse_line

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".txt", ".md", ".text"}
DATASET_SUFFIXES = {".parquet", ".json"}
FOLDER_SUFFIXES = TEXT_SUFFIXES | {".jsonl", ".parquet"}
READ_CHUNK = 1 << 20
TEXT_DOC_CHARS = 16_000  # a long text file becomes documents of about this size, cut at paragraphs
MAX_REPORTED = 5  # bad lines described in the log when skipping


@dataclass
class Document:
    """Either plain ``text`` or a chat ``messages`` list (with optional ``tools``)."""

    source: str
    text: str | None = None
    messages: list[dict] | None = None
    tools: list[dict] | None = None


@dataclass
class ReadReport:
    """What ``skip_bad`` skipped: the count and the first few reasons."""

    skipped: int = 0
    examples: list[str] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < MAX_REPORTED:
            self.examples.append(reason)
            log.warning("skipping bad record: %s", reason)


def _check_errors(errors: str) -> None:
    if errors not in ("strict", "replace"):
        raise CodetteError(f"errors must be 'strict' or 'replace', got {errors!r}")


def _open_checked(path: Path) -> Any:
    """The file opened in binary, after the checks every reader shares: exists, not empty, not binary."""
    if not path.exists():
        raise CodetteError(f"data file not found: {path}")
    if path.is_dir():
        raise CodetteError(f"{path} is a folder; expected a file")
    fh = open(path, "rb")
    head = fh.read(8192)
    if not head.strip() and path.stat().st_size <= len(head):
        fh.close()
        raise CodetteError(f"data file is empty: {path}")
    if b"\x00" in head:
        fh.close()
        raise CodetteError(f"{path} looks binary (contains NUL bytes); expected UTF-8 text")
    fh.seek(0)
    return fh


def iter_text(path: Path, errors: str = "strict", chunk: int = READ_CHUNK) -> Iterator[str]:
    """Decoded text of ``path`` in pieces, never holding more than a chunk or two in memory."""
    _check_errors(errors)
    decoder = codecs.getincrementaldecoder("utf-8")(errors=errors)
    offset, lines = 0, 1  # bytes read so far, line number at the start of the next chunk
    with _open_checked(path) as fh:
        while True:
            raw = fh.read(chunk)
            final = not raw
            pending = len(decoder.getstate()[0])  # bytes of a character split by the previous chunk
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as exc:
                at = offset - pending + exc.start
                line = lines + raw[: max(0, exc.start - pending)].count(b"\n")
                raise CodetteError(f"{path}:{line}: invalid UTF-8 at byte {at}; convert the file to UTF-8 "
                                   f"or pass --errors replace") from None
            offset += len(raw)
            lines += raw.count(b"\n")
            if text:
                yield text
            if final:
                return


def _cut_point(buf: str, limit: int) -> int:
    """Where to end a document in ``buf``: after the last paragraph break, else line break, before ``limit``."""
    for sep in ("\n\n", "\n"):
        i = buf.rfind(sep, 0, limit)
        if i > 0:
            return i + len(sep)
    return limit


def iter_text_documents(path: Path, errors: str = "strict", max_chars: int = TEXT_DOC_CHARS) -> Iterator[Document]:
    """A text file as documents of at most ``max_chars``, cut at paragraph or line boundaries.

    The documents concatenate back to the file's text exactly; a file shorter than ``max_chars`` is
    one document.
    """
    buf = ""
    n = 0
    any_text = False
    for piece in iter_text(path, errors):
        buf += piece
        while len(buf) > max_chars:
            cut = _cut_point(buf, max_chars)
            n += 1
            any_text = any_text or bool(buf[:cut].strip())
            yield Document(source=f"{path}#{n}", text=buf[:cut])
            buf = buf[cut:]
    if buf:
        n += 1
        any_text = any_text or bool(buf.strip())
        if n == 1 and not any_text:
            raise CodetteError(f"data file is empty: {path}")
        yield Document(source=str(path) if n == 1 else f"{path}#{n}", text=buf)
    elif not any_text:
        raise CodetteError(f"data file is empty: {path}")


def _document(obj: dict, where: str) -> Document:
    if "messages" not in obj:
        return Document(source=where, text=obj["text"])
    return Document(source=where, messages=obj["messages"], tools=obj.get("tools"))


def _good_documents(path: Path, attempts: Iterator[Callable[[], Document | None]], unit: str, skip_bad: bool,
                    report: ReadReport) -> Iterator[Document]:
    """Run each attempt (``None`` = nothing there, e.g. a blank line). A bad record raises, or with
    ``skip_bad`` is counted in ``report``; a source without a single good record is an error."""
    found = bad = 0
    for attempt in attempts:
        try:
            doc = attempt()
        except CodetteError as exc:
            if not skip_bad:
                raise
            bad += 1
            report.skip(str(exc))
            continue
        if doc is not None:
            found += 1
            yield doc
    if not found:
        detail = f" ({bad} bad {unit}{'s' if bad != 1 else ''} skipped)" if bad else ""
        raise CodetteError(f"{path} contains no conversations{detail}")


def _line_document(line: str | CodetteError, where: str) -> Document | None:
    if isinstance(line, CodetteError):  # too long or not UTF-8 (see codette.jsonl.iter_lines)
        raise line
    if not line.strip():
        return None
    return _document(validate_record(parse_line(line, where), where), where)


def read_jsonl_conversations(path: Path, errors: str = "strict", skip_bad: bool = False,
                             report: ReadReport | None = None) -> Iterator[Document]:
    """One document per line: ``{"messages": [...], "tools": [...]?}`` (chat) or ``{"text": "..."}``."""
    _check_errors(errors)
    path = Path(path)
    with _open_checked(path) as fh:
        attempts = (partial(_line_document, line, f"{path}:{lineno}")
                    for lineno, line, _ in iter_lines(fh, path, errors))
        yield from _good_documents(path, attempts, "line", skip_bad, report if report is not None else ReadReport())


# ------------------------------------------------------------------------------------------------
# Hugging Face datasets (save_to_disk folders), parquet and JSON through `datasets`
# ------------------------------------------------------------------------------------------------
def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        raise CodetteError("reading Hugging Face datasets, .parquet or .json files needs the 'datasets' package: "
                           "pip install datasets") from None
    datasets.disable_progress_bars()
    return datasets


def is_hf_dataset_dir(path: Path) -> bool:
    """A folder written by ``Dataset.save_to_disk`` or ``DatasetDict.save_to_disk``."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def _drop_nones(value: Any) -> Any:
    """Arrow gives every struct the union of all keys (missing ones as null); drop those nulls again."""
    if isinstance(value, dict):
        return {k: _drop_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nones(v) for v in value]
    return value


def _rows(path: Path) -> Iterator[tuple[str, Any]]:
    """(label, iterable of rows) for each split of a dataset folder or file, streamed where possible."""
    ds = _datasets()
    if path.is_dir():
        try:
            loaded = ds.load_from_disk(str(path))
        except Exception as exc:  # datasets raises many types for a damaged folder
            raise CodetteError(f"{path}: cannot load the Hugging Face dataset: {exc}") from None
        if isinstance(loaded, ds.DatasetDict):
            for split in sorted(loaded):
                yield f"{path}[{split}]", loaded[split]
        else:
            yield str(path), loaded
        return
    if not path.exists():
        raise CodetteError(f"data file not found: {path}")
    if path.stat().st_size == 0:
        raise CodetteError(f"data file is empty: {path}")
    kind = "parquet" if path.suffix.lower() == ".parquet" else "json"
    try:
        stream = ds.load_dataset(kind, data_files=str(path), split="train", streaming=True)
    except Exception as exc:
        raise CodetteError(f"{path}: cannot read it as {kind}: {exc}") from None
    yield str(path), stream


def _row_document(row: Any, where: str) -> Document:
    obj = _drop_nones(dict(row))
    if "messages" in obj or "text" not in obj:
        obj = {k: obj[k] for k in ("messages", "tools") if k in obj}
    else:
        obj = {"text": obj["text"]}
    if not obj:
        raise CodetteError(f"{where}: needs a 'messages' or a 'text' column; found "
                           f"{', '.join(sorted(dict(row))) or 'no columns'}")
    return _document(validate_record(obj, where), where)


def _row_attempts(path: Path) -> Iterator[Callable[[], Document]]:
    """One attempt per row; a row the library cannot read at all stops the read (it is not a bad record)."""
    for label, rows in _rows(path):
        it = iter(rows)
        i = 0
        while True:
            try:
                row = next(it)
            except StopIteration:
                break
            except Exception as exc:
                raise CodetteError(f"{label}: cannot read row {i + 1}: {exc}") from None
            i += 1
            yield partial(_row_document, row, f"{label}:row {i}")


def read_dataset_rows(path: Path, skip_bad: bool = False, report: ReadReport | None = None) -> Iterator[Document]:
    """Rows of a dataset folder or a parquet/JSON file: each needs ``messages`` (chat) or ``text``."""
    path = Path(path)
    yield from _good_documents(path, _row_attempts(path), "row", skip_bad,
                               report if report is not None else ReadReport())


# ------------------------------------------------------------------------------------------------
def iter_documents(path: Path | str, errors: str = "strict", skip_bad: bool = False,
                   report: ReadReport | None = None) -> Iterator[Document]:
    """Documents from a ``.jsonl`` chat file, a text file, a dataset, or a folder of such files."""
    _check_errors(errors)
    path = Path(path)
    if is_hf_dataset_dir(path):
        yield from read_dataset_rows(path, skip_bad, report)
        return
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES)
        if not files:
            raise CodetteError(f"folder {path} has no .txt, .md, .jsonl or .parquet files")
        for f in files:
            yield from iter_documents(f, errors, skip_bad, report)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from read_jsonl_conversations(path, errors, skip_bad, report)
        return
    if not path.exists():
        raise CodetteError(f"data file not found: {path}")
    if suffix in DATASET_SUFFIXES:
        yield from read_dataset_rows(path, skip_bad, report)
        return
    if suffix not in TEXT_SUFFIXES:
        raise CodetteError(f"{path}: unsupported data file type {suffix!r}; use .txt, .md, .jsonl, .json, .parquet "
                           f"or a Hugging Face dataset folder")
    yield from iter_text_documents(path, errors)
