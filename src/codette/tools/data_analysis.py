"""analyze_data: summary statistics of a CSV, JSON or JSON Lines table in the workspace.

Computed with the stdlib :mod:`statistics` module (exact rational arithmetic for the mean, so the
numbers do not depend on row order or on the platform's float summation) and rounded to
:data:`DECIMALS` places, so the same file always gives byte-identical results. The parsing and the
statistics run in a :class:`~codette.tools.bounded.BoundedWorker` child (memory and time bounded);
the workspace file is read by the parent through its checked descriptor.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import posixpath
from typing import Any

from codette.tools import limits
from codette.tools.base import BoundedRunner, ToolFailure
from codette.tools.files import Workspace
from codette.tooltable import ANALYSIS_OPERATIONS

MAX_DATA_BYTES = 10 * 1024 * 1024
MAX_CSV_FIELD_CHARS = 1024 * 1024
DECIMALS = 6
_MISSING = {"", "na", "n/a", "nan", "null", "none", "-"}


def _number(value: Any) -> float | int | None:
    """A cell as a number, None when missing; raises ValueError when it is text."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("boolean")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    if isinstance(value, str):
        s = value.strip()
        if s.lower() in _MISSING:
            return None
        try:
            return int(s)
        except ValueError:
            f = float(s)
            return f if math.isfinite(f) else None
    raise ValueError(type(value).__name__)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _round(x: float | int) -> float | int:
    if isinstance(x, int):
        return x
    r = round(x, DECIMALS)
    return 0.0 if r == 0 else r


def load_table(data: bytes, shown: str, suffix: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(format, columns in first-seen order, rows) of a CSV/TSV, JSON or JSON Lines file's bytes."""
    text = data.decode("utf-8-sig", errors="replace")
    suffix = suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson") or text.lstrip()[:1] in ("[", "{"):
        return _load_json(text, shown, suffix)
    return _load_csv(text, shown)


def _load_json(text: str, shown: str, suffix: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    fmt = "json"
    if suffix not in (".jsonl", ".ndjson") and limits.json_depth(text) > limits.MAX_JSON_DEPTH:
        raise ToolFailure(f"file '{shown}' is not valid JSON: nested more than {limits.MAX_JSON_DEPTH} levels deep")
    try:
        if suffix in (".jsonl", ".ndjson"):
            fmt = "jsonl"
            data: Any = []
            for lineno, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        data.append(limits.loads(line, MAX_DATA_BYTES))
                    except limits.JSONLimitError as exc:
                        raise ToolFailure(f"file '{shown}' is not valid JSON Lines: line {lineno}: {exc}") from None
        else:
            data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ToolFailure(f"file '{shown}' is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    except (ValueError, RecursionError) as exc:
        raise ToolFailure(f"file '{shown}' is not valid JSON: {str(exc)[:120]}") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise ToolFailure(f"file '{shown}' must hold a list of records (objects)")
        data = lists[0]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ToolFailure(f"file '{shown}' must hold a list of records (objects)")
    columns: list[str] = []
    seen: set[str] = set()
    for row in data:
        for k in row:
            if k not in seen:
                seen.add(k)
                columns.append(k)
    return fmt, columns, data


def _load_csv(text: str, shown: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    sample = text[:8192]
    try:
        dialect: Any = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    csv.field_size_limit(MAX_CSV_FIELD_CHARS)
    try:
        reader = csv.DictReader(io.StringIO(text), dialect=dialect)
        if not reader.fieldnames:
            raise ToolFailure(f"file '{shown}' is empty or has no header row")
        columns = [c.strip() for c in reader.fieldnames]
        rows = [{k.strip() if isinstance(k, str) else k: v for k, v in r.items()} for r in reader]
    except csv.Error as exc:
        raise ToolFailure(f"file '{shown}' is not a readable CSV table: {exc}") from None
    return "csv", columns, rows


def _numeric_values(rows: list[dict[str, Any]], column: str) -> list[float | int] | None:
    """The column's non-missing numbers, or None when it holds text."""
    values: list[float | int] = []
    for row in rows:
        try:
            v = _number(row.get(column))
        except ValueError:
            return None
        if v is not None:
            values.append(v)
    return values


def _summary(values: list[float | int]) -> dict[str, Any]:
    if not values:
        return {"count": 0, "mean": None, "std": None, "min": None, "max": None, "median": None}
    return {
        "count": len(values),
        "mean": _round(float(statistics.mean(values))),
        "std": _round(statistics.stdev(values)) if len(values) > 1 else None,
        "min": min(values),
        "max": max(values),
        "median": _round(statistics.median(values)),
    }


def _operation(values: list[float | int], op: str) -> float | int | None:
    if op == "count":
        return len(values)
    if op == "sum":
        # math.fsum is exactly rounded; integers stay integers.
        return sum(values) if all(isinstance(v, int) for v in values) else _round(math.fsum(values))
    if not values:
        return None
    if op == "mean":
        return _round(float(statistics.mean(values)))
    if op == "median":
        return _round(statistics.median(values))
    if op == "min":
        return min(values)
    if op == "max":
        return max(values)
    if op == "std":
        return _round(statistics.stdev(values)) if len(values) > 1 else None
    raise ToolFailure(f"unknown operation '{op}'; use one of {', '.join(ANALYSIS_OPERATIONS)}")


def table_summary(data: bytes, shown: str, rel: str, column: str | None = None,
                  operation: str | None = None) -> dict[str, Any]:
    """Rows, columns and numeric summaries; or one column's summary; or one operation on a column.

    ``std`` is the sample standard deviation (n - 1), None for fewer than two values. Pure: works on
    the file's bytes, so it can run in the bounded child.
    """
    try:
        return _summarise(data, shown, rel, column, operation)
    except OverflowError:
        raise ToolFailure(f"the numbers in '{shown}' are too large to summarise (overflow)") from None
    except RecursionError:
        raise ToolFailure(f"file '{shown}' is nested too deeply to analyse") from None


def _summarise(data: bytes, shown: str, rel: str, column: str | None, operation: str | None) -> dict[str, Any]:
    fmt, columns, rows = load_table(data, shown, posixpath.splitext(rel)[1])
    shown_rel = rel
    if operation and not column:
        raise ToolFailure(f"operation '{operation}' needs a 'column'; columns are: {', '.join(columns)}")
    if column is not None:
        if column not in columns:
            raise ToolFailure(f"column '{column}' not found; columns are: {', '.join(columns)}")
        values = _numeric_values(rows, column)
        if values is None:
            if operation == "count":
                count = sum(1 for r in rows if str(r.get(column) or "").strip() != "")
                return {"path": shown_rel, "rows": len(rows), "column": column, "operation": "count", "result": count}
            raise ToolFailure(f"column '{column}' is not numeric")
        if operation:
            return {"path": shown_rel, "rows": len(rows), "column": column, "operation": operation,
                    "result": _operation(values, operation)}
        return {"path": shown_rel, "rows": len(rows), "column": column, **_summary(values)}
    numeric: dict[str, Any] = {}
    for c in columns:
        values = _numeric_values(rows, c)
        if values is not None and values:
            numeric[c] = _summary(values)
    return {"path": shown_rel, "format": fmt, "rows": len(rows), "columns": columns, "numeric": numeric}


def analyze_data(ws: Workspace, path: str, column: str | None = None, operation: str | None = None,
                 worker: BoundedRunner | None = None) -> dict[str, Any]:
    """Tool entry point: the file read through the workspace, summarised in ``worker`` (or in process)."""
    data, rel = ws.read_bytes(path, MAX_DATA_BYTES, "file", not_file=f"file '{path}' does not exist")
    if worker is None:
        return table_summary(data, path, rel, column, operation)
    return worker.call(table_summary, data, f"'{path}'", shown=path, rel=rel, column=column, operation=operation)
