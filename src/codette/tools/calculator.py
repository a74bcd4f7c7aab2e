"""calculator: arithmetic by walking Python's AST over a whitelist, never ``eval``/``exec``.

Only number literals, + - * / // % **, unary + and -, parentheses, and the functions and constants
in :data:`FUNCTIONS` / :data:`CONSTANTS` are accepted; names, attributes, subscripts, strings and
everything else are refused. Results that would be enormous (``2**10**10``) are refused before
they are computed, so a single call cannot eat the CPU or memory.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from codette.tools.base import ToolFailure
from codette.tooltable import MAX_EXPRESSION_CHARS

MAX_INT_BITS = 4096          # about 1233 decimal digits
MAX_FACTORIAL = 500
SIGNIFICANT_DIGITS = 12      # floats are shown as a person would read them: 0.1 + 0.2 -> 0.3

Number = int | float


def _log(x: Number, base: Number | None = None) -> float:
    return math.log(x) if base is None else math.log(x, base)


def _factorial(n: Number) -> int:
    if isinstance(n, float):
        if not n.is_integer():
            raise ValueError("factorial() needs a whole number")
        n = int(n)
    if n > MAX_FACTORIAL:
        raise ToolFailure(f"factorial({n}) is too large; the limit is factorial({MAX_FACTORIAL})")
    return math.factorial(n)


def _round(x: Number, ndigits: Number | None = None) -> Number:
    return round(x) if ndigits is None else round(x, int(ndigits))


FUNCTIONS: dict[str, Callable[..., Number]] = {
    "sqrt": math.sqrt, "cbrt": math.cbrt, "exp": math.exp, "log": _log, "ln": math.log,
    "log10": math.log10, "log2": math.log2,
    "sin": math.sin, "cos": math.cos, "tan": math.tan, "asin": math.asin, "acos": math.acos,
    "atan": math.atan, "atan2": math.atan2, "sinh": math.sinh, "cosh": math.cosh, "tanh": math.tanh,
    "degrees": math.degrees, "radians": math.radians, "hypot": math.hypot,
    "abs": abs, "round": _round, "floor": math.floor, "ceil": math.ceil, "trunc": math.trunc,
    "factorial": _factorial, "gcd": math.gcd, "min": min, "max": max,
}
CONSTANTS: dict[str, float] = {"pi": math.pi, "e": math.e, "tau": math.tau}

_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_OP_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Mod: "%", ast.Pow: "**"}


def _check_size(value: Number) -> Number:
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolFailure("the result is too large to compute (more than about 1200 digits)")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolFailure("the result is too large (overflows to infinity)")
    return value


def _power(base: Number, exp: Number) -> Number:
    """``base ** exp``, refused before computing when an integer result would be astronomically large.

    Float powers need no guard: they overflow quickly with ``OverflowError``.
    """
    if isinstance(base, int) and isinstance(exp, int) and exp > 0 and abs(base) > 1:
        if exp * math.log2(abs(base)) > MAX_INT_BITS:
            raise ToolFailure(f"{base} ** {exp} is too large to compute (more than about 1200 digits)")
    result = base ** exp
    if isinstance(result, complex):
        raise ToolFailure(f"{base} ** {exp} is not a real number")
    return result


class _Evaluator:
    def visit(self, node: ast.AST) -> Number:
        if isinstance(node, ast.Expression):
            return self.visit(node.body)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
                raise ToolFailure(f"only numbers are allowed, not {node.value!r}")
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            left, right = self.visit(node.left), self.visit(node.right)
            if isinstance(node.op, ast.Pow):
                return _check_size(_power(left, right))
            if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
                raise ToolFailure("division by zero")
            return _check_size(_BINOPS[type(node.op)](left, right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            return _UNARY[type(node.op)](self.visit(node.operand))
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            if node.id in FUNCTIONS:
                raise ToolFailure(f"'{node.id}' is a function; call it like {node.id}(x)")
            raise ToolFailure(f"unknown name '{node.id}'; allowed constants: {', '.join(CONSTANTS)}")
        if isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
                what = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
                raise ToolFailure(f"function '{what}' is not allowed; allowed: {', '.join(sorted(FUNCTIONS))}")
            if node.keywords:
                raise ToolFailure(f"{node.func.id}() takes positional arguments only")
            args = [self.visit(a) for a in node.args]
            return _check_size(FUNCTIONS[node.func.id](*args))
        if isinstance(node, ast.Attribute):
            raise ToolFailure("attribute access is not allowed")
        if isinstance(node, ast.BinOp):
            raise ToolFailure(f"operator {type(node.op).__name__} is not allowed; use + - * / // % **")
        raise ToolFailure(f"'{type(node).__name__}' is not allowed in a calculator expression")


def _display(value: Number) -> Number:
    if isinstance(value, float):
        value = float(f"{value:.{SIGNIFICANT_DIGITS}g}")
        if value == 0:
            value = 0.0  # no "-0.0"
    return value


def evaluate(expression: str) -> Number:
    """The value of ``expression`` or :class:`ToolFailure` saying what is wrong with it."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolFailure(f"expression is longer than {MAX_EXPRESSION_CHARS} characters")
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    if not text:
        raise ToolFailure("empty expression")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolFailure(f"cannot parse expression: {exc.msg}") from None
    except (RecursionError, MemoryError):
        raise ToolFailure("expression is nested too deeply") from None
    try:
        return _Evaluator().visit(tree)
    except ToolFailure:
        raise
    except ZeroDivisionError:
        raise ToolFailure("division by zero") from None
    except OverflowError:
        raise ToolFailure("the result is too large (overflow)") from None
    except (ValueError, TypeError) as exc:
        raise ToolFailure(f"invalid calculation: {exc}") from None
    except RecursionError:
        raise ToolFailure("expression is nested too deeply") from None


def calculator(expression: str) -> dict[str, Any]:
    """Tool entry point: ``{"expression": ..., "result": ...}``."""
    return {"expression": expression, "result": _display(evaluate(expression))}
