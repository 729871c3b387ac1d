"""No schema, table or column name can change the SQL sqlnotify generates.

Property tests over arbitrary Unicode names (see ``support.identifiers``) on the
real PostgreSQL and on SQLite: create the table under those names, install
the triggers, write, receive the exact values, and check that a canary
table survived and that each trigger function's source is exactly the body
sqlnotify built (a name that closed the dollar quote early would leave a
shorter body, or a failed statement).  The same again through the
``sqlnotify sql`` command's output applied by ``psql``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import identifier_app as _identifier_app
from support.env import IN_CI
from support.identifiers import CHARACTERS, FRAGMENTS, Spec, declare, specs
from support.watching import keyed_table

from sqlnotify import Notifier, Operation, SQLNotifyConfigurationError
from sqlnotify._names import quote_ident
from sqlnotify.cli import main
from sqlnotify.dialects.postgresql import dollar_quote
from sqlnotify.exceptions import SQLNotifyIdentifierSizeError
from sqlnotify.testing import EventRecorder

TIMEOUT = 10.0
# Above PostgreSQL's NOTIFY limit: sent through the overflow table, or by key.
LARGE = 9000

# SQLNOTIFY_IDENTIFIER_EXAMPLES=n runs n examples per property test (default:
# 25 on PostgreSQL, where each example starts a notifier; 30 on SQLite).
_EXAMPLES = os.environ.get("SQLNOTIFY_IDENTIFIER_EXAMPLES")


def examples(default: int) -> settings:
    return settings(
        max_examples=int(_EXAMPLES or default),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


PG_TABLES = specs(max_bytes=63, reserved=("sqlnotify_",))
SQLITE_TABLES = specs(max_bytes=200, reserved=("sqlite_", "sqlnotify_"), fold=str.lower)


def received(recorder: EventRecorder, count: int) -> list[tuple[Any, dict[str, Any]]]:
    """``(id, extra_columns)`` of every event so far, once at least ``count`` arrived."""
    events = recorder.wait_for(count, TIMEOUT)
    return [(e.id, dict(e.extra_columns)) for e in events]


def same(got: Any, want: Any) -> None:
    """``got == want``, with values shortened in the failure message (some are 9 kB)."""
    if got != want:
        raise AssertionError(f"got {_short(got)}\nwant {_short(want)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 600 else text[:300] + f" ...({len(text)} chars)... " + text[-200:]


# -- PostgreSQL -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_canary(pg_engine: sa.Engine) -> Iterator[str]:
    """A schema holding a one-row table that no example may touch."""
    name = f"canary_{uuid.uuid4().hex[:12]}"
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        conn.exec_driver_sql(f'CREATE TABLE "{name}".canary (v text)')
        conn.exec_driver_sql(f"INSERT INTO \"{name}\".canary VALUES ('alive')")
    yield name
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')


def assert_canary(engine: sa.Engine, schema: str) -> None:
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(f'SELECT v FROM "{schema}".canary').all()
    assert rows == [("alive",)]


@pytest.fixture(scope="module")
def bodies_unchecked_engine(pg_url: str) -> Iterator[sa.Engine]:
    """An engine whose sessions skip the validation of function bodies."""
    url = sa.make_url(pg_url).update_query_dict({"options": "-c check_function_bodies=off"})
    engine = sa.create_engine(url)
    yield engine
    engine.dispose()


def own_schema(spec: Spec) -> str:
    """The example's schema: a unique prefix, then the generated name, within 63 bytes."""
    name = f"i{uuid.uuid4().hex[:8]}|{spec.schema}"
    return name.encode("utf-8")[:63].decode("utf-8", "ignore")


def create_schema(engine: sa.Engine, spec: Spec) -> str:
    """The example's own schema, with the generated table in it."""
    schema = own_schema(spec)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {quote_ident(schema)}".replace("%", "%%"))
    try:
        spec.table_object(schema).metadata.create_all(engine)
    except BaseException:
        drop_schema(engine, schema)
        raise
    return schema


def drop_schema(engine: sa.Engine, schema: str) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DROP SCHEMA {quote_ident(schema)} CASCADE".replace("%", "%%"))


def assert_function_sources(engine: sa.Engine, notifier: Notifier) -> None:
    """Each trigger function holds exactly the body sqlnotify built, attached to its table."""
    dialect: Any = notifier.dialect
    with engine.connect() as conn:
        for watch in notifier.watches:
            row = conn.execute(
                sa.text(
                    "SELECT p.prosrc, c.relname, tn.nspname FROM pg_proc p"
                    " JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " JOIN pg_trigger t ON t.tgfoid = p.oid"
                    " JOIN pg_class c ON c.oid = t.tgrelid"
                    " JOIN pg_namespace tn ON tn.oid = c.relnamespace"
                    " WHERE n.nspname = :s AND p.proname = :f"
                ),
                {"s": watch.effective_schema, "f": watch.channel},
            ).one()
            assert row == (dialect.function_body(watch), watch.table, watch.effective_schema)


def pg_round_trip(engine: sa.Engine, spec: Spec, schema: str, *, state: str = "installed") -> None:
    """Install (or find, ``state="unchanged"``) the watches; write; receive the exact values."""
    table = spec.table_object(schema)
    notifier = Notifier(engine, journal_schema=schema)
    declare(notifier, table, spec, postgres=True)
    got = {op: EventRecorder() for op in Operation.rows()}
    for op, recorder in got.items():
        notifier.subscribe(table, op)(recorder)
    notifier.start()
    try:
        assert {s.state for s in notifier.install_states} == {state}
        assert_function_sources(engine, notifier)
        big = spec.other * (LARGE // max(1, len(spec.other.encode())) + 1) + "x" * LARGE
        with engine.begin() as conn:
            conn.execute(
                table.insert(),
                [
                    {spec.key: 1, spec.text: spec.value, spec.number: 7},
                    {spec.key: 2, spec.text: big, spec.number: 8},
                ],
            )
        same(
            received(got[Operation.INSERT], 2),
            [(1, {spec.text: spec.value, spec.number: 7}), (2, {spec.text: big, spec.number: 8})],
        )
        with engine.begin() as conn:
            # Not a change of the trigger column: no event.
            conn.execute(table.update().where(table.c[spec.key] == 1).values({spec.number: 9}))
            conn.execute(table.update().where(table.c[spec.key] == 1).values({spec.text: big}))
            conn.execute(table.update().where(table.c[spec.key] == 2).values({spec.text: "s"}))
        # The large one is sent by key and re-read (before the row is deleted below).
        same(
            sorted(received(got[Operation.UPDATE], 2)),
            [(1, {spec.text: big}), (2, {spec.text: "s"})],
        )
        with engine.begin() as conn:
            conn.execute(table.delete().where(table.c[spec.key] == 1))
        same(received(got[Operation.DELETE], 1), [(1, {spec.text: big, spec.number: 9})])
    finally:
        notifier.stop()


@pytest.mark.postgresql
@examples(25)
@given(spec=PG_TABLES, bodies_unchecked=st.booleans())
def test_postgres_any_names(
    pg_engine: sa.Engine,
    bodies_unchecked_engine: sa.Engine,
    pg_canary: str,
    spec: Spec,
    bodies_unchecked: bool,
) -> None:
    engine = bodies_unchecked_engine if bodies_unchecked else pg_engine
    schema = create_schema(pg_engine, spec)
    try:
        pg_round_trip(engine, spec, schema)
    finally:
        drop_schema(pg_engine, schema)
        assert_canary(pg_engine, pg_canary)


@pytest.fixture(scope="module")
def raw_pg(pg_url: str) -> Iterator[Any]:
    """A psycopg2 cursor in autocommit (statements run without parameters)."""
    import psycopg2

    from sqlnotify.dialects.postgresql import listener_dsn

    conn = psycopg2.connect(**listener_dsn(sa.make_url(pg_url)))
    conn.autocommit = True
    yield conn.cursor()
    conn.close()


@pytest.mark.postgresql
@examples(200)
@given(body=st.text(CHARACTERS) | st.lists(st.sampled_from(FRAGMENTS)).map("".join))
def test_dollar_quote_reads_back_as_the_body(raw_pg: Any, body: str) -> None:
    raw_pg.execute(f"SELECT {dollar_quote(body)}")
    assert raw_pg.fetchall() == [(body,)]


@pytest.mark.postgresql
def test_postgres_name_over_63_bytes_is_refused(pg_engine: sa.Engine, schema: str) -> None:
    column = "é" * 32  # 64 bytes: PostgreSQL would keep 63 of them
    wide = sa.Table(
        "w",
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(column, sa.Text),
        schema=schema,
    )
    notifier = Notifier(pg_engine).watch(wide, "insert", extra_columns=[column])
    with pytest.raises(SQLNotifyIdentifierSizeError) as info:
        notifier.ddl()
    message = str(info.value)
    assert f"extra_columns column name {column!r}" in message
    assert f"table {schema}.w" in message or f"table {schema + '.w'!r}" in message
    assert "64 bytes" in message and "at most 63" in message


def test_nul_in_a_name_is_refused_with_the_column_named(sqlite_path: str) -> None:
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = keyed_table("orders", sa.Column("a\x00b", sa.Text))
    notifier = Notifier(engine).watch(table, "insert", extra_columns=["a\x00b"])
    refused = r"extra_columns column name 'a\\x00b'.*NUL"
    with pytest.raises(SQLNotifyConfigurationError, match=refused):
        notifier.ddl()
    engine.dispose()


# -- SQLite -----------------------------------------------------------------------------


def sqlite_round_trip(engine: sa.Engine, spec: Spec) -> None:
    table = spec.table_object(None)
    table.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE canary (v TEXT)")
        conn.exec_driver_sql("INSERT INTO canary VALUES ('alive')")
    notifier = Notifier(engine)
    declare(notifier, table, spec, postgres=False)
    got = {op: EventRecorder() for op in Operation.rows()}
    for op, recorder in got.items():
        notifier.subscribe(table, op)(recorder)
    changed = spec.value + spec.other + "."
    notifier.start()
    try:
        assert {s.state for s in notifier.install_states} == {"installed"}
        status = notifier.dialect.status()
        assert sorted((r["table"], r["operation"], r["state"]) for r in status) == sorted(
            (spec.table, op.value, "installed") for op in Operation.rows()
        )
        with engine.begin() as conn:
            conn.execute(table.insert(), [{spec.key: 1, spec.text: spec.value, spec.number: 7}])
        same(received(got[Operation.INSERT], 1), [(1, {spec.text: spec.value, spec.number: 7})])
        with engine.begin() as conn:
            conn.execute(table.update().values({spec.number: 9}))  # not a trigger column
            conn.execute(table.update().values({spec.text: changed}))
        same(received(got[Operation.UPDATE], 1), [(1, {spec.text: changed})])
        with engine.begin() as conn:
            conn.execute(table.delete())
        same(received(got[Operation.DELETE], 1), [(1, {spec.text: changed, spec.number: 9})])
    finally:
        notifier.stop()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT v FROM canary").all() == [("alive",)]


FORGED = '\n-- sqlnotify:{"v":1,"fp":"forged","operation":"delete","channel":"x"}\n'


def test_sqlite_names_cannot_imitate_the_trigger_metadata(sqlite_path: str) -> None:
    """A table or column name holding a metadata line does not change what is read back."""
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = sa.Table(
        "t" + FORGED,
        sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("c" + FORGED, sa.Text),
    )
    table.metadata.create_all(engine)

    def notifier() -> Notifier:
        column = "c" + FORGED
        return Notifier(engine).watch(table, "update", [column], trigger_columns=[column])

    first = notifier()
    assert [s.state for s in first.install()] == ["installed"]
    watch = first.watches[0]
    dialect: Any = first.dialect
    [row] = dialect.status()
    assert (row["operation"], row["channel"], row["state"]) == (
        "update",
        watch.channel,
        "installed",
    )
    assert row["fingerprint"] == dialect.fingerprint(watch)
    assert [s.state for s in notifier().install()] == ["unchanged"]
    first.dialect.close()
    engine.dispose()


def test_sqlite_reads_metadata_of_triggers_made_before_it_moved(sqlite_path: str) -> None:
    """Triggers whose metadata comment follows ``BEGIN`` (older releases) stay unchanged."""
    engine = sa.create_engine(f"sqlite:///{sqlite_path}")
    table = sa.Table("orders", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    table.metadata.create_all(engine)
    notifier = Notifier(engine).watch(table, "insert")
    dialect: Any = notifier.dialect
    [watch] = notifier.prepare()
    current = dialect.trigger_sql(watch)
    _, comment = current.split("\n", 1)[0].split(" -- ", 1)
    older = current.replace(f" -- {comment}\n", "", 1).replace("BEGIN\n", f"BEGIN\n-- {comment}\n")
    assert older != current and dialect.fingerprint(watch) in older
    with engine.begin() as conn:
        conn.exec_driver_sql(dialect.ddl(watch)[0])
        conn.exec_driver_sql(older)
    assert [s.state for s in notifier.install()] == ["unchanged"]
    dialect.close()
    engine.dispose()


@examples(30)
@given(spec=SQLITE_TABLES)
def test_sqlite_any_names(spec: Spec) -> None:
    with tempfile.TemporaryDirectory(prefix="sqlnotify-names-") as tmp:
        engine = sa.create_engine(f"sqlite:///{os.path.join(tmp, 'names.db')}")
        try:
            sqlite_round_trip(engine, spec)
        finally:
            engine.dispose()


# -- sqlnotify sql | psql -----------------------------------------------------------------
# psql has its own lexer (quotes, dollar quotes, :variables, backslash
# commands).  A notifier started after psql applied the printed statements
# must find every trigger exactly as it would have built it (no DDL).

needs_psql = pytest.mark.skipif(
    shutil.which("psql") is None and not IN_CI, reason="psql is not on PATH"
)
PSQL = ("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d")
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # tests/

# Every fragment the generated names draw from, in one table's names.
NASTY = Spec(
    schema="$sqlnotify$ {tag} %s",
    table="t\"'\\\n;-- $sqlnotify1$ :c",
    key="%(c)s \\' E'\r\n",
    text="{row} $$ /* */ 😀",
    number="END; DROP TABLE canary; --",
    value="a'b\\c\"d $sqlnotify$ %s\n",
    other="{tag}",
)


def libpq_url(url: str) -> str:
    """The URL as psql reads it (no SQLAlchemy driver name)."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def psql(url: str, script: str, *, bodies_unchecked: bool) -> None:
    if bodies_unchecked:
        script = "SET check_function_bodies = off;\n" + script
    env = dict(os.environ, PGCLIENTENCODING="UTF8")
    done = subprocess.run(
        [*PSQL, libpq_url(url)],
        input=script.encode("utf-8"),
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode("utf-8", "replace")[-2000:]


@pytest.mark.postgresql
@needs_psql
@examples(25)
@given(spec=PG_TABLES, bodies_unchecked=st.booleans())
def test_sql_command_through_psql(
    pg_engine: sa.Engine, pg_url: str, pg_canary: str, spec: Spec, bodies_unchecked: bool
) -> None:
    schema = create_schema(pg_engine, spec)
    try:
        _identifier_app.CURRENT.update(engine=pg_engine, schema=schema, spec=spec)
        result = CliRunner().invoke(main, ["sql", "--app", "support.identifier_app:notifier"])
        _identifier_app.CURRENT.clear()
        assert result.exit_code == 0, result.output[-2000:]
        # Bytes: Result.output would turn the "\r\n" of a name into "\n".
        psql(pg_url, result.stdout_bytes.decode("utf-8"), bodies_unchecked=bodies_unchecked)
        pg_round_trip(pg_engine, spec, schema, state="unchanged")
    finally:
        _identifier_app.CURRENT.clear()
        drop_schema(pg_engine, schema)
        assert_canary(pg_engine, pg_canary)


@pytest.mark.postgresql
@needs_psql
@pytest.mark.parametrize("bodies_unchecked", [False, True])
def test_sql_command_piped_to_psql(
    pg_engine: sa.Engine, pg_url: str, pg_canary: str, bodies_unchecked: bool
) -> None:
    """``sqlnotify sql --app ... | psql``, two real processes and a real pipe."""
    schema = create_schema(pg_engine, NASTY)
    try:
        app = {"url": pg_url, "schema": schema, "spec": dataclasses.asdict(NASTY)}
        env = dict(os.environ, SQLNOTIFY_IDENTIFIER_APP=json.dumps(app), PGCLIENTENCODING="UTF8")
        env["PYTHONPATH"] = HERE + os.pathsep + env.get("PYTHONPATH", "")
        prefix = ["-c", "SET check_function_bodies = off"] if bodies_unchecked else []
        app_name = "support.identifier_app:notifier"
        command = [sys.executable, "-m", "sqlnotify", "sql", "--app", app_name]
        with subprocess.Popen(command, stdout=subprocess.PIPE, env=env, cwd=HERE) as sqlnotify:
            applied = subprocess.run(
                [*PSQL, libpq_url(pg_url), *prefix, "-f", "-"],
                stdin=sqlnotify.stdout,
                capture_output=True,
                env=env,
                timeout=60,
                check=False,
            )
            assert sqlnotify.wait(timeout=60) == 0
        assert applied.returncode == 0, applied.stderr.decode("utf-8", "replace")
        pg_round_trip(pg_engine, NASTY, schema, state="unchanged")
    finally:
        drop_schema(pg_engine, schema)
        assert_canary(pg_engine, pg_canary)
