"""Sizes a reader can hold in their head: no function of the production code over 40
lines, no module of `core/` over 300."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCTION = ("core", "service", "outbox", "workers", "commands")
MAX_FUNCTION_LINES = 40
MAX_CORE_MODULE_LINES = 300


def long_functions(path: Path, *, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > MAX_FUNCTION_LINES
    ]


def test_no_function_is_over_40_lines() -> None:
    found = [
        hit
        for package in PRODUCTION
        for path in sorted((ROOT / package).rglob("*.py"))
        for hit in long_functions(path)
    ]
    assert found == []


def test_no_core_module_is_over_300_lines() -> None:
    found = {
        str(path.relative_to(ROOT)): lines
        for path in sorted((ROOT / "core").rglob("*.py"))
        if (lines := len(path.read_text().splitlines())) > MAX_CORE_MODULE_LINES
    }
    assert found == {}


def test_the_function_check_sees_a_long_function(tmp_path: Path) -> None:
    body = "\n".join(f"    x{n} = {n}" for n in range(MAX_FUNCTION_LINES))
    module = tmp_path / "sample.py"
    module.write_text(f"def long() -> None:\n{body}\n")
    assert len(long_functions(module, root=tmp_path)) == 1
