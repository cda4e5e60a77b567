"""A safe arithmetic calculator: parses with ``ast`` and walks the tree.

No ``eval``/``exec``/``compile`` of the input: only number literals, the
operators ``+ - * / // % **``, unary signs, parentheses, the constants
``pi``, ``e``, ``tau`` and a fixed set of math functions are accepted.
Anything else (names, attributes, calls of other things, comprehensions,
strings) is refused.  Sizes are bounded so that ``9**9**9`` or a
million-digit product fails fast instead of eating the CPU.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

MAX_EXPRESSION = 500
MAX_DEPTH = 50
MAX_INT_BITS = 4096
MAX_EXPONENT = 10_000


class CalcError(ValueError):
    pass


def _pow(a: float | int, b: float | int) -> float | int:
    if isinstance(a, int) and isinstance(b, int):
        if b < 0:
            return float(a) ** b if a else _div(1, 0)
        if abs(a) > 1 and b * max(1, abs(a).bit_length()) > MAX_INT_BITS:
            raise CalcError("result too large")
        return a**b
    if abs(b) > MAX_EXPONENT and abs(a) > 1:
        raise CalcError("result too large")
    try:
        r = math.pow(a, b)
    except (OverflowError, ValueError) as exc:
        raise CalcError(f"invalid power: {exc}") from None
    return r


def _div(a: float, b: float) -> float:
    if b == 0:
        raise CalcError("division by zero")
    return a / b


def _floordiv(a: float, b: float) -> float:
    if b == 0:
        raise CalcError("division by zero")
    return a // b


def _mod(a: float, b: float) -> float:
    if b == 0:
        raise CalcError("modulo by zero")
    return a % b


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: _div,
    ast.FloorDiv: _floordiv,
    ast.Mod: _mod,
    ast.Pow: _pow,
}
_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}


def _log(x: float, base: float | None = None) -> float:
    if x <= 0 or (base is not None and (base <= 0 or base == 1)):
        raise CalcError("log of a non-positive number")
    return math.log(x) if base is None else math.log(x, base)


def _sqrt(x: float) -> float:
    if x < 0:
        raise CalcError("square root of a negative number")
    return math.sqrt(x)


def _factorial(x: float) -> int:
    if x != int(x) or x < 0 or x > 500:
        raise CalcError("factorial takes a whole number from 0 to 500")
    return math.factorial(int(x))


_FUNCS: dict[str, tuple[Callable[..., Any], int, int]] = {
    # name: (function, min args, max args)
    "abs": (abs, 1, 1),
    "round": (round, 1, 2),
    "min": (min, 1, 32),
    "max": (max, 1, 32),
    "sqrt": (_sqrt, 1, 1),
    "exp": (math.exp, 1, 1),
    "log": (_log, 1, 2),
    "log10": (lambda x: _log(x, 10), 1, 1),
    "log2": (lambda x: _log(x, 2), 1, 1),
    "sin": (math.sin, 1, 1),
    "cos": (math.cos, 1, 1),
    "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1),
    "acos": (math.acos, 1, 1),
    "atan": (math.atan, 1, 1),
    "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1),
    "factorial": (_factorial, 1, 1),
    "hypot": (math.hypot, 2, 2),
}


def _check_size(v: Any) -> Any:
    if isinstance(v, int) and v.bit_length() > MAX_INT_BITS:
        raise CalcError("result too large")
    if isinstance(v, float) and (math.isinf(v) or math.isnan(v)):
        raise CalcError("result is not a finite number")
    return v


def _eval(node: ast.AST, depth: int) -> int | float:
    if depth > MAX_DEPTH:
        raise CalcError("expression nested too deeply")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            raise CalcError(f"unsupported literal {node.value!r}")
        return node.value
    if isinstance(node, ast.BinOp):
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise CalcError(f"unsupported operator {type(node.op).__name__}")
        left = _eval(node.left, depth + 1)
        right = _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Mult) and isinstance(left, int) and isinstance(right, int):
            if left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise CalcError("result too large")
        try:
            return _check_size(op(left, right))
        except OverflowError:
            raise CalcError("result too large") from None
    if isinstance(node, ast.UnaryOp):
        uop = _UNARY.get(type(node.op))
        if uop is None:
            raise CalcError(f"unsupported operator {type(node.op).__name__}")
        return uop(_eval(node.operand, depth + 1))
    if isinstance(node, ast.Name):
        if node.id in _CONSTANTS:
            return _CONSTANTS[node.id]
        raise CalcError(f"unknown name {node.id!r}")
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise CalcError(f"unsupported call (only these functions: {', '.join(sorted(_FUNCS))})")
        if node.func.id not in _FUNCS:
            raise CalcError(f"unknown function {node.func.id!r} (known: {', '.join(sorted(_FUNCS))})")
        fn, lo, hi = _FUNCS[node.func.id]
        if not lo <= len(node.args) <= hi:
            raise CalcError(f"{node.func.id}() takes {lo}{'' if lo == hi else f' to {hi}'} argument(s)")
        args = [_eval(a, depth + 1) for a in node.args]
        if node.func.id == "round" and len(args) == 2:
            args[1] = int(args[1])
        try:
            return _check_size(fn(*args))
        except (ValueError, OverflowError) as exc:
            raise CalcError(f"{node.func.id}: {exc}") from None
    raise CalcError(f"unsupported syntax: {type(node).__name__}")


def evaluate(expression: str) -> int | float:
    """Value of an arithmetic expression; raises ``CalcError`` with a reason."""
    if not isinstance(expression, str) or not expression.strip():
        raise CalcError("empty expression")
    if len(expression) > MAX_EXPRESSION:
        raise CalcError(f"expression longer than {MAX_EXPRESSION} characters")
    text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise CalcError(f"cannot parse {expression!r}: {exc.msg}") from None
    value = _eval(tree, 0)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value) if not isinstance(value, bool) else value
    return value
