"""The built-in calculator: arithmetic by walking the AST, never eval."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from llmos_cli.tools.builtin import run_calculator
from llmos_cli.tools.calculator import CalcError, evaluate


@pytest.mark.parametrize(
    "expr, value",
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("2 ** 10", 1024),
        ("2 ^ 10", 1024),
        ("7 // 2", 3),
        ("7 % 4", 3),
        ("10 / 4", 2.5),
        ("10 / 2", 5),
        ("-3 + +2", -1),
        ("sqrt(16) + abs(-2)", 6),
        ("round(pi, 3)", 3.142),
        ("max(1, 5, 3) - min(4, 2)", 3),
        ("log(e)", 1),
        ("log(8, 2)", 3),
        ("factorial(5)", 120),
        ("2 ** -1", 0.5),
        ("1e3 * 2", 2000),
        ("3 × 4 ÷ 2", 6),
    ],
)
def test_arithmetic(expr, value):
    assert evaluate(expr) == pytest.approx(value)


@pytest.mark.parametrize(
    "expr, message",
    [
        ("__import__('os').system('echo hacked')", "unsupported call"),
        ("__import__('os')", "unknown function '__import__'"),
        ("open('/etc/passwd').read()", "unsupported call"),
        ("(1).__class__", "unsupported syntax"),
        ("x + 1", "unknown name 'x'"),
        ("lambda: 1", "unsupported syntax"),
        ("[1, 2]", "unsupported syntax"),
        ("'a' * 3", "unsupported literal"),
        ("True + 1", "unsupported literal"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "modulo by zero"),
        ("9 ** 9 ** 9", "too large"),
        ("10 ** 5000", "too large"),
        ("factorial(10000)", "factorial takes"),
        ("sqrt(-1)", "negative"),
        ("log(0)", "non-positive"),
        ("1 +", "cannot parse"),
        ("", "empty"),
        ("1 < 2", "unsupported syntax"),
        ("1" * 600, "longer than"),
        ("sqrt(1, 2)", "takes 1 argument"),
        ("exp(1000)", "math range error|too large|finite"),
    ],
)
def test_refusals(expr, message):
    with pytest.raises(CalcError, match=message):
        evaluate(expr)


def test_no_eval_in_the_module():
    import ast

    src = (Path(__file__).resolve().parents[1] / "llmos_cli" / "tools" / "calculator.py").read_text()
    called = {n.func.id for n in ast.walk(ast.parse(src)) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


def test_tool_wrapper_returns_results_and_errors():
    ok = run_calculator({"expression": "6 * 7"})
    assert ok.ok and ok.value == {"expression": "6 * 7", "result": 42}
    bad = run_calculator({"expression": "6 / 0"})
    assert not bad.ok and "division by zero" in bad.error
    assert bad.model_text() == '{"error": "calculator: division by zero"}'
    assert math.isclose(run_calculator({"expression": "pi"}).value["result"], math.pi)
