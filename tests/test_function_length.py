"""Functions stay small: no function body in the package or the benchmarks is over 60 lines.

Long functions are split into named steps (docs/architecture.md, "How the code should feel"); the
docstring does not count, since a function may explain itself at any length.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 60


def _body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    first = fn.body[0]
    has_doc = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str)
    start = fn.body[1].lineno if has_doc and len(fn.body) > 1 else first.lineno
    return fn.end_lineno - start + 1


def long_functions(folders: tuple[str, ...] = ("monai_ssl_plugin", "benchmarks")) -> list[str]:
    """``path:line name (N lines)`` for every function whose body, docstring left out, is over the limit."""
    found = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_LINES:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({_body_lines(node)} lines)")
    return found


def test_no_function_body_over_60_lines():
    assert long_functions() == [], "split these into named steps"


def test_the_check_sees_a_long_function(tmp_path: Path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES + 1))
    fn = ast.parse(f'def f():\n    """doc"""\n{body}\n').body[0]
    assert _body_lines(fn) == MAX_LINES + 1
