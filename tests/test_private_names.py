"""The production code uses other libraries through their public API only.

A private name of a third-party library (a module `x._y`, a name `_y` imported from
one, an attribute `obj._y`) is an implementation detail its next release may change
without notice, silently. This walks the AST of `core/ service/ outbox/ workers/` and
fails on any. Our own private names stay allowed where we can tell that they are ours:

- `self._x` / `cls._x` when `_x` is defined by the enclosing class or by one of its
  bases that is our own class (a subclass of a third-party class may not reach into
  its base's privates);
- `mod._x` and `Class._x` when `mod` is one of our modules and `Class` one of our
  classes, and imports of private names from our own packages.

Everything else is refused, including `super()._x`, `other._x` and a private name
given as a string to `getattr`/`setattr`/`hasattr`/`delattr`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ("core", "service", "outbox", "workers", "commands")
FIRST_PARTY = frozenset({*PRODUCTION, "migrations", "tests"})
SELF_NAMES = frozenset({"self", "cls"})
ATTRIBUTE_BUILTINS = frozenset({"getattr", "setattr", "hasattr", "delattr"})
# Modules without a `_` that their library still keeps to itself: `databases` documents
# `Database`, its connections, transactions and `DatabaseURL`; its backends are internals.
INTERNAL_MODULES = frozenset({"databases.backends"})


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _is_internal(module: str) -> bool:
    parts = module.split(".")
    prefixes = {".".join(parts[: n + 1]) for n in range(len(parts))}
    return any(map(_is_private, parts)) or bool(prefixes & INTERNAL_MODULES)


def _is_first_party(module: str) -> bool:
    return module.split(".")[0] in FIRST_PARTY


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of names and attributes, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return None if head is None else f"{head}.{node.attr}"
    return None


@dataclass
class _Class:
    bases: list[str]
    defined: set[str] = field(default_factory=set)


def _class_definitions(node: ast.ClassDef) -> _Class:
    """The private names a class defines: in its body, and as `self._x = ...` anywhere
    in its methods."""
    found = _Class([base for base in map(_dotted, node.bases) if base is not None])
    for item in node.body:
        if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found.defined.add(item.name)
        targets = (
            item.targets
            if isinstance(item, ast.Assign)
            else [item.target]
            if isinstance(item, ast.AnnAssign)
            else []
        )
        found.defined.update(t.id for t in targets if isinstance(t, ast.Name))
    for child in ast.walk(node):
        if (
            isinstance(child, ast.Attribute)
            and isinstance(child.ctx, ast.Store)
            and isinstance(child.value, ast.Name)
            and child.value.id in SELF_NAMES
        ):
            found.defined.add(child.attr)
    return found


@dataclass
class _Codebase:
    files: dict[Path, ast.Module]
    classes: dict[str, list[_Class]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> _Codebase:
        files = {
            path: ast.parse(path.read_text(), str(path))
            for package in PRODUCTION
            for path in sorted((root / package).rglob("*.py"))
        }
        codebase = cls(files)
        for tree in files.values():
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    codebase.classes.setdefault(node.name, []).append(_class_definitions(node))
        return codebase

    def defined_by(self, class_name: str, seen: frozenset[str] = frozenset()) -> set[str]:
        """The names a class of ours defines, with those of its bases that are ours."""
        names: set[str] = set()
        for found in self.classes.get(class_name, []):
            names |= found.defined
            for base in found.bases:
                short = base.rsplit(".", 1)[-1]
                if short in self.classes and short not in seen:
                    names |= self.defined_by(short, seen | {class_name})
        return names


class _Checker(ast.NodeVisitor):
    def __init__(self, codebase: _Codebase, path: Path) -> None:
        self.codebase = codebase
        self.path = path
        self.ours: set[str] = set(codebase.classes)  # names bound to our modules/classes
        self.enclosing: list[str] = []
        self.problems: list[str] = []

    def _fail(self, node: ast.AST, message: str) -> None:
        where = self.path.relative_to(ROOT)
        self.problems.append(f"{where}:{getattr(node, 'lineno', '?')}: {message}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if _is_first_party(alias.name):
                self.ours.add((alias.asname or alias.name).split(".")[0])
            elif _is_internal(alias.name):
                self._fail(node, f"import of the private module {alias.name}")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or _is_first_party(module):
            self.ours.update(alias.asname or alias.name for alias in node.names)
            return
        if _is_internal(module):
            self._fail(node, f"import from the private module {module}")
        for alias in node.names:
            if _is_private(alias.name):
                self._fail(node, f"import of the private name {module}.{alias.name}")

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.enclosing.append(node.name)
        self.generic_visit(node)
        self.enclosing.pop()

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_private(node.attr) and not self._ours(node.value, node.attr):
            owner = _dotted(node.value) or type(node.value).__name__
            self._fail(node, f"private attribute {node.attr} of {owner}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        named = node.args[1:2]
        if (
            isinstance(node.func, ast.Name)
            and node.func.id in ATTRIBUTE_BUILTINS
            and named
            and isinstance(named[0], ast.Constant)
            and isinstance(named[0].value, str)
            and _is_private(named[0].value)
            and not self._ours(node.args[0], named[0].value)
        ):
            self._fail(node, f"{node.func.id} of the private name {named[0].value}")
        self.generic_visit(node)

    def _ours(self, owner: ast.expr, attr: str) -> bool:
        if isinstance(owner, ast.Name) and owner.id in SELF_NAMES:
            return bool(self.enclosing) and attr in self.codebase.defined_by(self.enclosing[-1])
        dotted = _dotted(owner)
        if dotted is None or dotted.split(".")[0] not in self.ours:
            return False
        # One of our classes may subclass another library's: only what ours define.
        name = dotted.rsplit(".", 1)[-1]
        return name not in self.codebase.classes or attr in self.codebase.defined_by(name)


def _problems(root: Path) -> Iterator[str]:
    codebase = _Codebase.load(root)
    for path, tree in codebase.files.items():
        checker = _Checker(codebase, path)
        checker.visit(tree)
        yield from checker.problems


def test_the_production_code_reaches_no_private_name_of_another_library() -> None:
    problems = list(_problems(ROOT))
    assert problems == [], "private names of other libraries:\n" + "\n".join(problems)


def _check_source(source: str) -> list[str]:
    path = ROOT / "core" / "example.py"
    codebase = _Codebase({path: ast.parse(source)})
    for node in ast.walk(codebase.files[path]):
        if isinstance(node, ast.ClassDef):
            codebase.classes.setdefault(node.name, []).append(_class_definitions(node))
    checker = _Checker(codebase, path)
    checker.visit(codebase.files[path])
    return checker.problems


def test_the_check_refuses_what_it_must() -> None:
    source = """
import databases.backends.sqlite
from databases.backends.common.records import Record
from sqlalchemy.sql.compiler import _CompileLabel
import aiosqlite

class Mine(databases.Database):
    def run(self):
        return self._backend, super()._connection

def f(connection, compiled):
    getattr(compiled, "_bind_processors")
    return connection._conn, compiled._result_columns, aiosqlite._private, Mine._connection
"""
    found = _check_source(source)
    assert len(found) == 10, "\n".join(found)


def test_the_check_allows_our_own_private_names() -> None:
    source = """
import core.database
from core.database import _helper
from outbox import fanout

class Base:
    _limit = 3
    def __init__(self):
        self._items = []

class Mine(Base):
    def __init__(self):
        super().__init__()
        self._count = 0
    def _step(self):
        return self._items, self._limit, self._count, self._step, Base._limit, self.__class__

def f():
    return core.database._run, fanout._rows, _helper, getattr(Mine, "_limit")
"""
    assert _check_source(source) == []
