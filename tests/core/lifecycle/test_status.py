"""Statuses have one home: `core.lifecycle.status`. Nothing else spells them out, except
the API's schema types, which must name the same ones."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from core.lifecycle import CANCELLABLE, FINAL, REDELIVERABLE, Status
from service.schemas import DeliveryStatus

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = ("core", "service", "outbox", "workers", "commands")
# Literal types cannot be built from the enum; they are compared with it below.
ALLOWED = {Path("core/lifecycle/status.py"), Path("service/schemas.py")}


def status_strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in set(Status)
    ]


def test_no_module_spells_out_a_status() -> None:
    found = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) not in ALLOWED
        for hit in status_strings(path)
    ]
    assert found == []


def test_the_guard_sees_a_status_string() -> None:
    module = ROOT / "core" / "lifecycle" / "status.py"
    assert status_strings(module), "the guard would pass whatever the code says"


def test_the_api_schema_names_the_same_statuses() -> None:
    assert set(get_args(DeliveryStatus)) == {status.value for status in Status}


def test_the_groups_are_made_of_statuses() -> None:
    assert set(CANCELLABLE) | set(FINAL) | set(REDELIVERABLE) <= set(Status)
    assert not set(FINAL) & set(CANCELLABLE)
