"""Statements compiled once per dialect and run on the driver's own connection.

`databases` compiles every statement on every call, which costs more CPU than running
a short one. Here a statement is compiled once (`PreparedStatement`) with SQLAlchemy's
public compile API, and each call only binds its values: `Compiled.construct_params`
(or `construct_expanded_state` for SQL that varies with its values, such as `IN` of a
list), the bind parameters' `TypeEngine.bind_processor` and the result columns'
`TypeEngine.result_processor`. Rows come back as dicts, typed as the columns say.

A statement built once, at import, with `sa.bindparam(name)` placeholders is compiled
once for the life of the process; one built per call is compiled per call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import (
    ClauseElement,
    ColumnElement,
    FunctionElement,
    ReturnsRows,
    UpdateBase,
    bindparam,
)
from sqlalchemy.types import Boolean, TypeEngine

Row = dict[str, Any]
"""A row: column key -> value, through the column's type."""

STATEMENT_CACHE_SIZE = 500

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True)
class Query:
    """A statement and the values of its bind parameters, by name; or, made with
    `Query.for_each`, a statement run once for each of `each` in one driver call
    (executemany), which returns no rows.

    The statement is a SQLAlchemy Core SELECT, INSERT, UPDATE or DELETE (or
    `sa.text(...).columns(...)`); whether it writes is known from it."""

    statement: ClauseElement
    values: Mapping[str, Any] = field(default_factory=dict)
    each: Sequence[Mapping[str, Any]] | None = None

    @classmethod
    def for_each(cls, statement: ClauseElement, rows: Sequence[Mapping[str, Any]]) -> Query:
        return cls(statement, each=rows)

    @property
    def writes(self) -> bool:
        return isinstance(self.statement, UpdateBase)


def _bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).bind_processor(dialect)


def _result_processor(type_: TypeEngine[Any], dialect: Dialect) -> Processor:
    return type_.dialect_impl(dialect).result_processor(dialect, None)


class PreparedStatement:
    """One statement compiled for one dialect of a positional paramstyle (`?` for
    sqlite3, `$1` for asyncpg)."""

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        if not isinstance(statement, ReturnsRows | UpdateBase):
            raise TypeError("run a SQLAlchemy Core statement (sa.text(...) needs .columns())")
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler) and compiled.positiontup is not None
        self.compiled = compiled
        self.sql = compiled.string
        binds = compiled.binds
        # SQL that depends on the values (an IN of a list): expanded per call.
        self.varies = any(bind.expanding or bind.literal_execute for bind in binds.values())
        self.names = list(compiled.positiontup)
        self.processors = [_bind_processor(binds[name].type, dialect) for name in self.names]
        # An expanded state processes only the expanded values: the others' processors.
        self.by_name = {name: _bind_processor(bind.type, dialect) for name, bind in binds.items()}
        columns = (
            [(str(column.key), column) for column in compiled.effective_returning or ()]
            if isinstance(statement, UpdateBase)  # with the RETURNING the dialect adds
            else statement.exported_columns.items()
        )
        self.keys = [key for key, _ in columns]
        self.results = [_result_processor(column.type, dialect) for _, column in columns]

    def bind(self, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        """The SQL and the driver's positional arguments for `values` by bind name."""
        if self.varies:
            state = self.compiled.construct_expanded_state(dict(values), escape_names=False)
            processors = {
                **{name: process for name, process in self.by_name.items() if process},
                **state.processors,
            }
            names = state.positiontup or []
            params = state.parameters
            return state.statement, [
                processors[name](params[name]) if name in processors else params[name]
                for name in names
            ]
        return self.sql, self.arguments(values)

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        """The driver's positional arguments for `values`, for SQL that does not vary."""
        params = self.compiled.construct_params(dict(values), escape_names=False)
        return [
            params[name] if process is None else process(params[name])
            for name, process in zip(self.names, self.processors, strict=True)
        ]

    def many(self, rows: Iterable[Mapping[str, Any]]) -> tuple[str, list[list[Any]]]:
        """The SQL and one argument list per row, for executemany."""
        if self.varies:
            raise ValueError("a statement run for each row must not vary with its values")
        return self.sql, [self.arguments(row) for row in rows]

    def rows(self, fetched: Iterable[Sequence[Any]]) -> list[Row]:
        """The driver's rows as dicts, each value through its column's type."""
        keys, results = self.keys, self.results
        return [
            {
                key: value if process is None or value is None else process(value)
                for key, process, value in zip(keys, results, row, strict=True)
            }
            for row in fetched
        ]


class FixedInList:
    """`column IN (:name0, ..., :name{size-1})`, for statements built once: a list of up
    to `size` values fills it (the slots left over are NULL, which matches nothing), and
    `chunks` splits a longer list. An IN of a list whose length shapes the SQL would be
    expanded on every call, and prepared by the server once per length.

        ids = FixedInList("id", 16)
        BY_IDS = sa.select(table).where(ids.in_(table.c.id))   # once, at import
        rows = await fetch_all(db, BY_IDS, ids.values(["a", "b"]))
    """

    def __init__(self, name: str, size: int) -> None:
        self.size = size
        self.names = [f"{name}{n}" for n in range(size)]

    def in_(self, column: ColumnElement[Any]) -> ColumnElement[bool]:
        return column.in_([bindparam(name, type_=column.type) for name in self.names])

    def values(self, items: Sequence[Any]) -> dict[str, Any]:
        if len(items) > self.size:
            raise ValueError(f"{len(items)} values for an IN list of {self.size}")
        return dict(zip(self.names, [*items, *[None] * (self.size - len(items))], strict=True))

    def chunks(self, items: Sequence[Any]) -> list[Sequence[Any]]:
        return [items[start : start + self.size] for start in range(0, len(items), self.size)]


class not_by_index(FunctionElement[bool]):
    """`not_by_index(condition)`: `condition`, checked on the rows that the statement's
    other conditions find, never used by the planner to find them. SQLite renders
    `likely(condition) = 1`, PostgreSQL `(condition) IS TRUE`.

    For `id IN (16 ids) AND status = 'pending' AND next_attempt_at <= ...`: without
    statistics, SQLite's planner preferred the `(status, next_attempt_at)` index to the
    primary key, and so did PostgreSQL's generic plan of the prepared statement (a
    BitmapAnd of both): a claim then read every pending delivery, 70 ms on SQLite with
    a backlog of 60,000 where the key costs 0.1 ms (`tests/core/lifecycle/test_plans.py`)."""

    type = Boolean()
    inherit_cache = True
    name = "not_by_index"


@compiles(not_by_index)
def _is_true(element: not_by_index, compiler: SQLCompiler, **kw: Any) -> str:
    return f"(({compiler.process(element.clauses, **kw)}) IS TRUE)"


@compiles(not_by_index, "sqlite")
def _likely_on_sqlite(element: not_by_index, compiler: SQLCompiler, **kw: Any) -> str:
    return f"likely({compiler.process(element.clauses, **kw)})"


class StatementCache:
    """The prepared statements of one dialect, by statement object, least recently
    used first out: those built once stay; those built per call pass through."""

    def __init__(self, dialect: Dialect, *, size: int = STATEMENT_CACHE_SIZE) -> None:
        self.dialect = dialect
        self.size = size
        self._entries: OrderedDict[ClauseElement, PreparedStatement] = OrderedDict()

    def prepare(self, statement: ClauseElement) -> PreparedStatement:
        prepared = self._entries.get(statement)
        if prepared is not None:
            self._entries.move_to_end(statement)
            return prepared
        prepared = PreparedStatement(statement, self.dialect)
        self._entries[statement] = prepared
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return prepared
