"""Reading JSONL safely: one record per line, with line numbers, limits checked before parsing.

Every stage that reads JSONL (the user's data, the written splits, probe sets, metrics logs) goes
through here, so a line that is too long, nested too deeply, not UTF-8 or not JSON is always a
:class:`CodetteError` naming the file and line, never a ``RecursionError`` or a decoder traceback.
Dependency-free apart from :mod:`codette.errors`, so every stage may import it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from codette.errors import CodetteError

log = logging.getLogger(__name__)

MAX_DEPTH = 64  # records nest about 6 deep (messages > message > tool_calls > call > function > arguments)
MAX_LINE_BYTES = 64 << 20  # one record; a whole book as one "text" value fits
# One left-to-right pass: a string literal (its closing quote optional, so an unterminated one is
# consumed once, to the end) or a bracket. Matching strings and brackets separately, or requiring the
# closing quote, makes the regex engine rescan the rest of the text from every quote of an unterminated
# '"\\"\\"...' string: quadratic time, hours for 2 MiB, with the GIL held.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)


def nesting_depth(text: str, stop_above: int | None = None) -> int:
    """The deepest ``[``/``{`` nesting of a JSON text (brackets inside strings do not count), in linear time.

    The one pre-parse depth check of every JSON reader (JSONL lines, tool calls, tool arguments, HTTP
    tool responses), so none of them is quadratic on hostile text. ``stop_above``: return as soon as
    the depth passes it (the caller only needs to know that it did).
    """
    depth = deepest = 0
    for m in _TOKEN.finditer(text):
        ch = text[m.start()]  # a string match is never copied out
        if ch == "[" or ch == "{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and depth > stop_above:
                    return depth
        elif ch == "]" or ch == "}":
            depth -= 1
    return deepest


def parse_line(line: str, where: str, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of one line; ``where`` (``file:line``) starts every error message."""
    # A line with fewer brackets than the limit cannot nest deeper; only others are scanned.
    if line.count("[") + line.count("{") > max_depth and nesting_depth(line, max_depth) > max_depth:
        raise CodetteError(f"{where}: JSON nested deeper than {max_depth} levels; a record is a flat object "
                           f"such as {{\"messages\": [...]}}")
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        raise CodetteError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:  # a depth the scan above did not see (it cannot, but never a traceback)
        raise CodetteError(f"{where}: JSON nested too deeply") from None


def iter_lines(fh: IO[bytes], path: Path | str, errors: str = "strict",
               max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, str | CodetteError, bool]]:
    """``(line number, text, complete)`` of each line of a binary file; ``complete`` is False for a
    last line without its newline (a writer killed mid-line). A line that is too long or not UTF-8
    comes back as the :class:`CodetteError` to raise (or to count, for callers that skip bad lines)."""
    lineno = 0
    while True:
        raw = fh.readline(max_line_bytes + 1)
        if not raw:
            return
        lineno += 1
        where = f"{path}:{lineno}"
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line without holding it
                raw = fh.readline(1 << 20)
            yield lineno, CodetteError(f"{where}: line longer than {max_line_bytes:,} bytes"), True
            continue
        try:
            yield lineno, raw.decode("utf-8", errors=errors), raw.endswith(b"\n")
        except UnicodeDecodeError as exc:
            yield lineno, CodetteError(f"{where}: invalid UTF-8 at byte {exc.start} of the line; convert the "
                                       f"file to UTF-8 or pass --errors replace"), True


def read_jsonl(path: Path | str, errors: str = "strict", partial_last_ok: bool = False,
               max_depth: int = MAX_DEPTH, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` of every non-blank line of ``path``; the first bad line raises.

    ``partial_last_ok``: a last line without a newline that does not parse is skipped with a
    warning (an append-only log whose writer was killed), instead of being an error.
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise CodetteError(f"file not found: {path}") from None
    except OSError as exc:
        raise CodetteError(f"cannot read {path}: {exc.strerror or exc}") from None
    with fh:
        for lineno, line, complete in iter_lines(fh, path, errors, max_line_bytes):
            if isinstance(line, CodetteError):
                raise line
            if not line.strip():
                continue
            try:
                value = parse_line(line, f"{path}:{lineno}", max_depth)
            except CodetteError:
                if partial_last_ok and not complete:
                    log.warning("%s:%d: partial last line skipped", path, lineno)
                    return
                raise
            yield lineno, value


def read_json_object(path: Path | str) -> dict[str, Any]:
    """A JSON file whose top level is an object (a config file); anything else is one line naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CodetteError(f"{path} is not valid JSON: {exc}") from None
    except RecursionError:
        raise CodetteError(f"{path} is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise CodetteError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    return data
