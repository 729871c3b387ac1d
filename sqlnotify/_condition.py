"""Server-side conditions: a watch's ``where=`` expression, for a trigger's ``WHEN``.

A :class:`Condition` wraps a SQLAlchemy boolean expression over the watched
table's columns (``Order.total > 100``, ``Order.status.in_([...])``,
``and_``/``or_``/``not_``, ``.is_(None)``).  A dialect renders it with
:meth:`Condition.render` for its own SQLAlchemy dialect: each column becomes
a reference to the trigger's row (``NEW."total"``), each bound value a literal
rendered by SQLAlchemy's literal processor of the value's type, so a value
never becomes SQL.  A value SQLAlchemy cannot render as a literal is refused.

The in-memory database evaluates the same expression in Python
(:meth:`Condition.evaluate`), with SQL's NULL logic: a comparison with NULL is
unknown, and an unknown condition lets nothing through.

A condition rebuilt from an installed trigger's metadata has no expression:
it carries the key and the SQL text recorded when it was installed.
"""

from __future__ import annotations

import copy
import json
import operator
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

import sqlalchemy as sa
from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.elements import (
    BinaryExpression,
    BindParameter,
    BooleanClauseList,
    ColumnClause,
    ColumnElement,
    False_,
    Grouping,
    Null,
    True_,
    UnaryExpression,
)

from .exceptions import SQLNotifyConfigurationError

__all__ = ["Condition"]

_NOT_IN_TRIGGER = (sa.sql.Select, sa.sql.selectable.ScalarSelect, sa.sql.selectable.Exists)

_COMPARE: dict[Any, Callable[[Any, Any], Any]] = {
    operators.eq: operator.eq,
    operators.ne: operator.ne,
    operators.lt: operator.lt,
    operators.le: operator.le,
    operators.gt: operator.gt,
    operators.ge: operator.ge,
}


class Condition:
    """A watch's server-side condition (see the module docstring)."""

    __slots__ = ("expression", "key", "recorded")

    def __init__(
        self, expression: ColumnElement[Any] | None, key: str, recorded: str | None = None
    ) -> None:
        #: The SQLAlchemy expression; ``None`` for one rebuilt from metadata.
        self.expression = expression
        #: A stable text of the expression and its values (part of the watch's spec).
        self.key = key
        #: The SQL text an installed trigger recorded (rebuilt conditions only).
        self.recorded = recorded

    @classmethod
    def build(cls, expression: Any) -> Condition:
        """Check ``expression``'s shape (its columns are checked by :meth:`check_columns`)."""
        if not isinstance(expression, ColumnElement) or not isinstance(expression.type, sa.Boolean):
            raise SQLNotifyConfigurationError(
                f"where= takes a SQLAlchemy boolean expression over the watched table's"
                f" columns, such as Order.total > 100 or Order.status.in_(['new', 'paid']),"
                f" not {expression!r}"
            )
        for element in visitors.iterate(expression):
            if isinstance(element, _NOT_IN_TRIGGER):
                raise SQLNotifyConfigurationError(
                    "where= cannot hold a subquery: a trigger's WHEN condition sees only the"
                    " changed row (compare its columns with values)"
                )
            if isinstance(element, BindParameter) and (element.callable or element.required):
                raise SQLNotifyConfigurationError(
                    f"where= holds the parameter {element.key!r} without a value: a"
                    " trigger's condition is fixed when it is installed, so every value"
                    " must be given in the expression"
                )
        compiled = expression.compile(compile_kwargs={"render_postcompile": True})
        params = sorted((k, repr(v)) for k, v in compiled.params.items())
        key = str(compiled) + " " + json.dumps(params, separators=(",", ":"))
        return cls(expression, key)

    @classmethod
    def from_record(cls, key: str, recorded: str | None) -> Condition:
        """The condition an installed trigger recorded (key and SQL text)."""
        if not isinstance(key, str) or not isinstance(recorded, str):
            raise TypeError("incomplete condition record")
        return cls(None, key, recorded)

    def column_names(self) -> list[str]:
        """The names of the columns the expression reads, in order of appearance."""
        if self.expression is None:
            return []
        names = [e.name for e in visitors.iterate(self.expression) if _is_column(e)]
        return list(dict.fromkeys(names))

    def check_columns(self, table: sa.Table, what: str) -> None:
        """Refuse columns that are not ``table``'s (by table and by name)."""
        if self.expression is None:
            return
        for element in visitors.iterate(self.expression):
            if not _is_column(element):
                continue
            owner = getattr(element, "table", None)
            if element.name not in table.columns or (
                owner is not None and getattr(owner, "name", table.name) != table.name
            ):
                valid = ", ".join(c.name for c in table.columns)
                raise SQLNotifyConfigurationError(
                    f"where=: column {element.name!r} is not a column of {what} (table"
                    f" {table.fullname!r}); a condition reads only the watched row's"
                    f" columns: {valid}"
                )

    def render(self, dialect: sa.Dialect, ref: str) -> str:
        """The condition as SQL text for ``dialect``, reading the row ``ref`` (``NEW``...).

        ``dialect`` must be initialised (connected once): string literals
        depend on server settings such as ``standard_conforming_strings``.

        :raises SQLNotifyConfigurationError: a value has no literal form.
        """
        if self.expression is None:
            assert self.recorded is not None
            return self.recorded
        # Statements sqlnotify runs without parameters: no "%" may be doubled.
        plain = copy.copy(dialect)
        plain.paramstyle = "named"
        plain.positional = False
        plain.identifier_preparer = plain.preparer(plain)
        quote = plain.identifier_preparer.quote

        def to_row(element: Any, **kw: Any) -> Any:
            if _is_column(element):
                return sa.literal_column(f"{ref}.{quote(element.name)}", type_=element.type)
            return None

        expression = visitors.replacement_traverse(self.expression, {}, to_row)
        try:
            return str(expression.compile(dialect=plain, compile_kwargs={"literal_binds": True}))
        except (sa.exc.CompileError, NotImplementedError, TypeError, ValueError) as exc:
            raise SQLNotifyConfigurationError(
                f"where=: {self.key.split(' [', 1)[0]!r} cannot be written into a"
                f" {dialect.name} trigger ({exc}); use values of the column's own type"
                " (str, int, float, Decimal, bool, date/time as the column stores them)"
            ) from exc

    def evaluate(self, row: Mapping[str, Any]) -> bool:
        """Whether the condition lets ``row`` through (SQL NULL logic; unknown is no).

        :raises SQLNotifyConfigurationError: an operator the in-memory
            database does not evaluate.
        """
        if self.expression is None:
            raise SQLNotifyConfigurationError("a recorded condition cannot be evaluated")
        return _value(self.expression, row) is True


def _is_column(element: Any) -> TypeGuard[ColumnClause[Any]]:
    return isinstance(element, ColumnClause) and not getattr(element, "is_literal", False)


def _value(element: Any, row: Mapping[str, Any]) -> Any:
    """The SQL value of ``element`` for ``row``: ``None`` is NULL (unknown)."""
    if isinstance(element, Grouping):
        return _value(element.element, row)
    if _is_column(element):
        return row.get(element.name)
    if isinstance(element, BindParameter):
        return element.effective_value
    if isinstance(element, True_):
        return True
    if isinstance(element, (False_, Null)):
        return False if isinstance(element, False_) else None
    if isinstance(element, BooleanClauseList):
        values = [_value(c, row) for c in element.clauses]
        if element.operator is operators.and_:
            return False if False in values else (None if None in values else True)
        if element.operator is operators.or_:
            return True if True in values else (None if None in values else False)
    if isinstance(element, UnaryExpression) and element.operator is operators.inv:
        inner = _value(element.element, row)
        return None if inner is None else not inner
    if isinstance(element, BinaryExpression):
        op = element.operator
        left = _value(element.left, row)
        if op in (operators.is_, operators.is_not):
            right = _value(element.right, row)
            same = left is None if right is None else left == right
            return same if op is operators.is_ else not same
        if op in (operators.in_op, operators.not_in_op):
            values = _value(element.right, row)
            if left is None:
                return None
            found = left in list(values)
            return found if op is operators.in_op else not found
        compare = _COMPARE.get(op)
        if compare is not None:
            right = _value(element.right, row)
            return None if left is None or right is None else bool(compare(left, right))
    raise SQLNotifyConfigurationError(
        f"where=: the in-memory database does not evaluate {element!r} (it evaluates"
        " =, !=, <, <=, >, >=, in_, not_in, is_, is_not, and_, or_ and not_)"
    )
