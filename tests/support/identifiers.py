"""Arbitrary names for the identifier property tests, and the table they describe.

Names mix random Unicode with fragments that have a meaning somewhere in
the SQL sqlnotify writes or in the tools it goes through: quotes, dollar
quotes (sqlnotify's own tags among them), format placeholders, psycopg2
placeholders, backslashes, newlines, comment starts, psql variables.
Excluded: NUL, which neither PostgreSQL nor SQLite accepts in SQL text, and
lone surrogates, which have no UTF-8 form.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa
from hypothesis import strategies as st

FRAGMENTS = (
    '"',
    "'",
    '""',
    "''",
    "$",
    "$$",
    "$sqlnotify$",
    "$sqlnotify1$",
    "$sqlnotify2$",
    "{tag}",
    "{}",
    "{{",
    "}}",
    "{row}",
    "{0}",
    "%",
    "%s",
    "%(c)s",
    "%%",
    "\\",
    "\\'",
    '\\"',
    "\n",
    "\r\n",
    "\t",
    ";",
    "--",
    "/*",
    "*/",
    ":c",
    ":'c'",
    "?",
    "?1",
    "E'",
    "U&",
    "`",
    "[",
    "]",
    ".",
    " ",
    "é",
    "ß",
    "名前",
    "😀",
    "\u200b",
    "-- sqlnotify:",
    "END;",
    "BEGIN",
    "DROP TABLE canary;",
)

# Every code point but NUL and the surrogates.
CHARACTERS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
VALUE = st.text(CHARACTERS, max_size=40) | st.lists(st.sampled_from(FRAGMENTS)).map("".join)


def _cut(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def names(max_bytes: int) -> st.SearchStrategy[str]:
    """Non-empty names of at most ``max_bytes`` UTF-8 bytes."""
    part = st.sampled_from(FRAGMENTS) | st.text(CHARACTERS, min_size=1, max_size=6)
    return (
        st.lists(part, min_size=1, max_size=6)
        .map(lambda parts: _cut("".join(parts), max_bytes))
        .filter(bool)
    )


@dataclasses.dataclass(frozen=True)
class Spec:
    """One generated table: its name, a key column, a text and an integer column."""

    schema: str
    table: str
    key: str
    text: str
    number: str
    value: str
    other: str

    def table_object(self, schema: str | None) -> sa.Table:
        return sa.Table(
            self.table,
            sa.MetaData(),
            sa.Column(self.key, sa.Integer, primary_key=True, autoincrement=False),
            sa.Column(self.text, sa.Text),
            sa.Column(self.number, sa.Integer),
            schema=schema,
        )


def declare(notifier: Any, table: sa.Table, spec: Spec, *, postgres: bool) -> None:
    """The watches of the property tests on ``table`` (PostgreSQL: overflow and durable too)."""
    notifier.watch(table, "insert", [spec.text, spec.number], use_overflow_table=postgres)
    notifier.watch(table, "update", [spec.text], trigger_columns=[spec.text])
    notifier.watch(table, "delete", [spec.text, spec.number], durable=postgres)


def _distinct(fold: Any) -> Any:
    return lambda cols: len({fold(c) for c in cols}) == len(cols)


@st.composite
def specs(draw: Any, *, max_bytes: int, reserved: tuple[str, ...], fold: Any = str) -> Spec:
    """A :class:`Spec`; ``fold`` maps a name to what the database compares (case, for SQLite)."""
    name = names(max_bytes).filter(lambda n: not fold(n).startswith(reserved))
    table = draw(name)
    key, text, number = draw(st.lists(name, min_size=3, max_size=3).filter(_distinct(fold)))
    return Spec(
        schema=draw(names(max_bytes)),
        table=table,
        key=key,
        text=text,
        number=number,
        value=draw(VALUE),
        other=draw(VALUE),
    )
