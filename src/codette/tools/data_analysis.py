"""analyze_data: summary statistics of a CSV, JSON or JSON Lines table in the workspace.

Computed with the stdlib :mod:`statistics` module (exact rational arithmetic for the mean, so the
numbers do not depend on row order or on the platform's float summation) and rounded to
:data:`DECIMALS` places, so the same file always gives byte-identical results.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Any

from codette.tools.base import ToolFailure
from codette.tools.files import Workspace

MAX_DATA_BYTES = 10 * 1024 * 1024
DECIMALS = 6
OPERATIONS = ("mean", "sum", "min", "max", "median", "std", "count")
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


def _round(x: float | int) -> float | int:
    if isinstance(x, int):
        return x
    r = round(x, DECIMALS)
    return 0.0 if r == 0 else r


def load_table(real: Path, shown: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    """(format, columns in first-seen order, rows) of a CSV/TSV, JSON or JSON Lines file."""
    if not real.is_file():
        raise ToolFailure(f"file '{shown}' does not exist")
    if real.stat().st_size > MAX_DATA_BYTES:
        raise ToolFailure(f"file '{shown}' is larger than {MAX_DATA_BYTES // (1024 * 1024)} MiB")
    text = real.read_bytes().decode("utf-8-sig", errors="replace")
    suffix = real.suffix.lower()
    if suffix in (".json", ".jsonl", ".ndjson") or text.lstrip()[:1] in ("[", "{"):
        return _load_json(text, shown, suffix)
    return _load_csv(text, shown)


def _load_json(text: str, shown: str, suffix: str) -> tuple[str, list[str], list[dict[str, Any]]]:
    fmt = "json"
    try:
        if suffix in (".jsonl", ".ndjson"):
            fmt = "jsonl"
            data: Any = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ToolFailure(f"file '{shown}' is not valid JSON: {exc.msg} at line {exc.lineno}") from None
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
    reader = csv.DictReader(io.StringIO(text), dialect=dialect)
    if not reader.fieldnames:
        raise ToolFailure(f"file '{shown}' is empty or has no header row")
    columns = [c.strip() for c in reader.fieldnames]
    rows = [{k.strip() if isinstance(k, str) else k: v for k, v in r.items()} for r in reader]
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
    raise ToolFailure(f"unknown operation '{op}'; use one of {', '.join(OPERATIONS)}")


def analyze_data(ws: Workspace, path: str, column: str | None = None, operation: str | None = None) -> dict[str, Any]:
    """Rows, columns and numeric summaries; or one column's summary; or one operation on a column.

    ``std`` is the sample standard deviation (n - 1), None for fewer than two values.
    """
    real = ws.resolve(path)
    fmt, columns, rows = load_table(real, path)
    shown = ws.relative(real)
    if operation and not column:
        raise ToolFailure(f"operation '{operation}' needs a 'column'; columns are: {', '.join(columns)}")
    if column is not None:
        if column not in columns:
            raise ToolFailure(f"column '{column}' not found; columns are: {', '.join(columns)}")
        values = _numeric_values(rows, column)
        if values is None:
            if operation == "count":
                count = sum(1 for r in rows if str(r.get(column) or "").strip() != "")
                return {"path": shown, "rows": len(rows), "column": column, "operation": "count", "result": count}
            raise ToolFailure(f"column '{column}' is not numeric")
        if operation:
            return {"path": shown, "rows": len(rows), "column": column, "operation": operation,
                    "result": _operation(values, operation)}
        return {"path": shown, "rows": len(rows), "column": column, **_summary(values)}
    numeric: dict[str, Any] = {}
    for c in columns:
        values = _numeric_values(rows, c)
        if values is not None and values:
            numeric[c] = _summary(values)
    return {"path": shown, "format": fmt, "rows": len(rows), "columns": columns, "numeric": numeric}
