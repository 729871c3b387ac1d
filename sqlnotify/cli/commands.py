"""The ``demo``, ``listen``, ``status``, ``install``, ``uninstall`` and ``sql`` commands.

Each command turns sqlnotify's and the driver's errors into a one-line
message and a non-zero exit status (click's ``Error: ...``), never a
traceback.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import click
import sqlalchemy as sa

from ..dialects import missing_driver_error
from ..events import ChangeEvent, Operation
from ..exceptions import SQLNotifyConfigurationError, SQLNotifyException
from ..notifier import Notifier
from .demo import run_demo
from .progress import backfill_with_bar

__all__ = ["COMMANDS", "engine_from_url", "load_notifier"]

_POSTGRES_SCHEMES = ("postgres", "postgresql")


# From "scheme://user:" to the last "@": the whole password, even one pasted
# unescaped with "@", ":" or "/" in it (masking too much is harmless).
_PASSWORD = re.compile(r"^(?P<head>[^:/?#]+://[^:@/?#]*:).*@")
_PORT = re.compile(r"^[^:/?#]+://(?:.*@)?(?:\[[^\]]*\]|[^:/?#@]*):([^/?#]*)")


def mask_password(text: str) -> str:
    """``text`` (a database URL, valid or not) with its password replaced by ``***``."""
    return _PASSWORD.sub(lambda m: m.group("head") + "***@", text, count=1)


def engine_from_url(text: str) -> sa.Engine:
    """A synchronous engine for a URL as users paste it.

    ``postgres://`` and ``postgresql://`` (which SQLAlchemy 2.1 would open
    with psycopg 3) and any ``postgresql+driver://`` use psycopg2; every
    ``sqlite+driver://`` uses the standard library's sqlite3 driver.
    """
    try:
        url = sa.make_url(text)
    except (sa.exc.ArgumentError, ValueError) as exc:
        port = _PORT.search(text)
        problem = (
            f"the port {port.group(1)!r} is not a number"
            if isinstance(exc, ValueError) and port
            else "expected e.g. postgresql://user@host:5432/db or sqlite:///path/to/file.db"
        )
        raise SQLNotifyConfigurationError(
            f"invalid database URL {mask_password(text)!r}: {problem}"
        ) from None
    backend = url.get_backend_name()
    connect_args: dict[str, Any] = {}
    if backend in _POSTGRES_SCHEMES:
        url = url.set(drivername="postgresql+psycopg2")
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10
    elif backend == "sqlite":
        url = url.set(drivername="sqlite")
        path = url.database
        in_file = bool(path) and path != ":memory:" and not str(path).startswith("file:")
        if in_file and not os.path.isfile(str(path)):
            raise SQLNotifyConfigurationError(
                f"no SQLite database at {path!r} (from {text!r}); sqlite:///relative.db"
                " and sqlite:////absolute/path.db name a file that exists"
            )
    elif backend in ("mysql", "mariadb"):
        url = url.set(drivername=f"{backend}+pymysql")
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = 10
    else:
        raise SQLNotifyConfigurationError(
            f"unsupported database URL {url.render_as_string(hide_password=True)!r}:"
            " sqlnotify works with postgresql://..., sqlite:///... and mysql://..."
        )
    try:
        return sa.create_engine(url, connect_args=connect_args)
    except ImportError as exc:
        raise missing_driver_error(url, exc) from exc


def _open(url: str) -> sa.Engine:
    try:
        engine = engine_from_url(url)
    except SQLNotifyException as exc:
        raise click.ClickException(str(exc)) from None
    _check_connect(engine)
    return engine


def _check_connect(engine: sa.Engine) -> None:
    """Fail early, and say so plainly, when the database does not answer."""
    try:
        with engine.connect():
            pass
    except sa.exc.DBAPIError as exc:
        raise click.ClickException(
            f"cannot connect to the database {_describe_url(engine)}: {_first_line(exc)}"
        ) from None


def _describe_url(engine: sa.Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextlib.contextmanager
def _readable_errors() -> Iterator[None]:
    """Turn expected failures into a one-line :class:`click.ClickException`."""
    try:
        yield
    except click.ClickException:
        raise
    except sa.exc.NoSuchTableError as exc:
        raise click.ClickException(f"no such table: {exc}") from None
    except (SQLNotifyException, sa.exc.SQLAlchemyError) as exc:
        raise click.ClickException(_first_line(exc)) from None
    except ImportError as exc:  # a dialect's optional dependency
        raise click.ClickException(f"missing dependency: {exc}") from None


def load_notifier(spec: str) -> Notifier:
    """The :class:`Notifier` named by ``module:attribute`` (or returned by ``module:function``).

    With ``module`` alone, the module must hold exactly one notifier.  The
    current directory is importable, as for ``python -m``.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name:
        raise click.BadParameter(f"{spec!r}: expected module:notifier, e.g. myapp.events:notifier")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted = module_name.removesuffix(".py").strip("./").replace("/", ".")
        raise click.ClickException(
            f"--app {spec!r} is a file path: --app takes module:attribute, the module as"
            f" Python imports it from the current directory, e.g. --app"
            f" {dotted}:{attr or 'notifier'}"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise click.ClickException(
            f"cannot import {module_name!r} (from --app {spec!r}): {type(exc).__name__}: {exc}"
            + (
                "; --app takes module:attribute, the module importable from the current"
                " directory (e.g. myapp.events:notifier)"
                if isinstance(exc, ModuleNotFoundError)
                else ""
            )
        ) from None
    if attr:
        if not hasattr(module, attr):
            raise click.ClickException(f"module {module_name!r} has no attribute {attr!r}")
        obj = getattr(module, attr)
        if not isinstance(obj, Notifier) and callable(obj):
            try:
                obj = obj()
            except Exception as exc:
                raise click.ClickException(
                    f"{spec}() failed: {type(exc).__name__}: {exc}"
                ) from None
    else:
        found = [v for v in vars(module).values() if isinstance(v, Notifier)]
        if len(found) != 1:
            raise click.ClickException(
                f"module {module_name!r} holds {len(found)} Notifier objects:"
                " name one with --app module:attribute"
            )
        obj = found[0]
    if not isinstance(obj, Notifier):
        raise click.ClickException(
            f"{spec} is a {type(obj).__name__}, not a sqlnotify Notifier"
            " (or a function returning one)"
        )
    return obj


def _parse_targets(targets: Sequence[str]) -> list[tuple[str, list[Operation]]]:
    parsed: list[tuple[str, list[Operation]]] = []
    for target in targets:
        table, sep, ops = target.partition(":")
        if not table:
            raise click.BadParameter(f"{target!r}: expected TABLE or TABLE:OPERATION")
        try:
            operations = (
                [Operation.coerce(op) for op in ops.split(",")] if sep else list(Operation.rows())
            )
        except SQLNotifyConfigurationError as exc:
            raise click.BadParameter(f"{target!r}: {exc}") from None
        known = {op for t, ops in parsed if t == table for op in ops}
        fresh = [op for op in dict.fromkeys(operations) if op not in known]
        if fresh:
            parsed.append((table, fresh))
    return parsed


def event_json(event: ChangeEvent) -> str:
    """One event as a JSON object on one line (:meth:`ChangeEvent.to_json`)."""
    return event.to_json()


_app_option = click.option(
    "--app",
    "app",
    required=True,
    envvar="SQLNOTIFY_APP",
    metavar="MODULE:NOTIFIER",
    help="Where your Notifier is: module:attribute, or module:function returning one"
    " (also $SQLNOTIFY_APP).",
)


@click.command()
@click.argument("url")
@click.argument("targets", metavar="TABLE[:OPERATION]...", nargs=-1, required=True)
@click.option(
    "--columns",
    default="",
    metavar="A,B",
    help="Extra columns to include in every event (default: the keys only).",
)
@click.option("--label", default=None, help="Channel label, for a channel of its own.")
@click.option(
    "--overflow-table",
    is_flag=True,
    help="Deliver rows over the notification size limit whole, through the overflow table.",
)
@click.option(
    "--keep-triggers",
    is_flag=True,
    help="Leave the triggers this command installed in place when it stops.",
)
@click.option(
    "--backfill",
    is_flag=True,
    help='First print the rows each table holds (operation "snapshot"), then its changes,'
    " with a progress bar on stderr (implies --durable; PostgreSQL).",
)
@click.option(
    "--durable",
    is_flag=True,
    help="Durable watches: events go through the journal, none lost while the listener reconnects.",
)
@click.option(
    "--consumer",
    default=None,
    metavar="NAME",
    help="A named consumer of durable watches (implies --durable): a restart resumes where"
    " NAME left off.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.001),
    default=None,
    metavar="SECONDS",
    help="PostgreSQL poll mode (implies --durable): no LISTEN, the journal read at most"
    " SECONDS apart; works through a transaction pooler.",
)
@click.option(
    "--journal-schema",
    default=None,
    metavar="SCHEMA",
    help="Schema of the journal tables of durable watches (default: the default schema).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also log sqlnotify's informational messages.")
def listen(
    url: str,
    targets: tuple[str, ...],
    columns: str,
    label: str | None,
    overflow_table: bool,
    keep_triggers: bool,
    backfill: bool,
    durable: bool,
    consumer: str | None,
    poll: float | None,
    journal_schema: str | None,
    verbose: bool,
) -> None:
    """Print every change of the given tables as one JSON line, until Ctrl-C.

    URL is a database URL (postgresql://user@host/db, sqlite:///file.db).
    TABLE is a table name, schema-qualified if needed (shop.orders); add
    :OPERATION (insert, update, delete, or several separated by commas) to
    watch fewer operations than all three.  Events go to stdout, one JSON
    object per line; messages go to stderr.

    Triggers already installed (by your application, say) are used as they
    are; the ones this command installs are removed when it stops, unless a
    notifier started using them meanwhile (or was seen using them within its
    grace period): those stay.

    --durable, --consumer and --poll read PostgreSQL's events from the
    journal (SQLite's always are): with --consumer, a restart resumes after
    the last event printed; with --poll, through a transaction pooler.
    With --backfill each table's current rows come first, then every change
    after them, none twice; with --consumer an interrupted backfill resumes.
    """
    _log_to_stderr(verbose)
    parsed = _parse_targets(targets)
    extra = [c.strip() for c in columns.split(",") if c.strip()]
    engine = _open(url)
    with _readable_errors():
        options: dict[str, Any] = {}
        if poll is not None:
            options = {"pg_listen": False, "pg_poll_interval": poll}
        if journal_schema is not None:
            options["journal_schema"] = journal_schema
        notifier = Notifier(engine, revoke_on_model_change=False, consumer=consumer, **options)
        notifier._advice = {
            "keep_outdated": "sqlnotify listen uses installed triggers as they are; `sqlnotify"
            " install --app module:notifier`, or a restart of the application that declares"
            " them, updates them",
            "overflow_table": "the --overflow-table flag",
        }
    durable = durable or backfill or consumer is not None or poll is not None
    stop = threading.Event()
    out = sys.stdout

    def emit(event: ChangeEvent) -> None:
        try:
            out.write(event_json(event) + "\n")
            out.flush()
        except BrokenPipeError:  # the reader went away (| head): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
            stop.set()

    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with _readable_errors():
            for table, operations in parsed:
                for op in operations:
                    notifier.watch(
                        table,
                        op,
                        extra_columns=extra or None,
                        channel_label=label,
                        use_overflow_table=overflow_table,
                        durable=durable,
                    )
                    notifier.subscribe(table, op, channel_label=label)(emit)
                if backfill:
                    backfill_with_bar(notifier, table, operations, label)
            notifier.start()
        watched = ", ".join(w.describe() for w in notifier.watches)
        click.echo(f"sqlnotify: listening for {watched} (Ctrl-C to stop)", err=True)
        while not stop.wait(1.0):
            pass
    finally:
        installed = [s.watch for s in notifier.install_states if s.state == "installed"]
        with _readable_errors():
            notifier.stop()
            if installed and not keep_triggers:
                notifier.dialect.uninstall(installed, policy=notifier.policy)
            notifier.dialect.close()
            engine.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo("sqlnotify: stopped", err=True)


def _log_to_stderr(verbose: bool) -> None:
    log = logging.getLogger("sqlnotify")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("sqlnotify: %(levelname)s: %(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO if verbose else logging.WARNING)


def _status_rows(engine: sa.Engine) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    notifier = Notifier(engine)
    dialect = notifier.dialect
    rows = dialect.status()
    extra = dialect.inspect(timeout=notifier.start_timeout)
    dialect.close()
    return rows, extra


def _ownership_lines(row: dict[str, Any]) -> list[str]:
    """The spec and the users of one trigger, for the status table."""
    out = []
    spec = row.get("spec")
    if spec:
        out.append("spec: " + ", ".join(f"{k}={v}" for k, v in spec.items() if v not in (None, [])))
    users = row.get("users", [])
    if row.get("listening"):
        out.append("a listener holds its lock now")
    for user in users:
        seen = user["last_seen"]
        when = seen.isoformat(timespec="seconds") if hasattr(seen, "isoformat") else str(seen)
        state = "live" if user.get("live") else "stopped"
        out.append(
            f"user {user['app']} on {user['host']} pid {user['pid']}: {state}, last seen {when}"
        )
    if not users:
        out.append("no recorded user")
    return out


def _relays(redis_url: str, prefix: str) -> list[dict[str, Any]]:
    """The health every live relay under ``prefix`` published to Redis."""
    try:
        import redis  # an optional dependency: the ``redis`` extra
    except ImportError:
        raise click.ClickException("--redis needs: pip install redis (the redis extra)") from None
    from ..dialects.redis.commands import health_pattern

    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5.0)
    try:
        keys = sorted(client.scan_iter(match=health_pattern(prefix), count=1000))
        found = [client.get(k) for k in keys]
    except redis.RedisError as exc:
        raise click.ClickException(f"Redis at {mask_password(redis_url)}: {exc}") from None
    finally:
        client.close()
    return [json.loads(text) for text in found if text]


@click.command()
@click.argument("url")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option(
    "--redis",
    "redis_url",
    default=None,
    metavar="REDIS_URL",
    help="Also show the relays writing Redis Streams there (see sqlnotify relay).",
)
@click.option("--stream-prefix", default="sqlnotify:", show_default=True)
def status(url: str, as_json: bool, redis_url: str | None, stream_prefix: str) -> None:
    """Show every trigger and function sqlnotify installed in the database.

    For each: its spec (key, payload and trigger columns, label), the
    notifiers recorded as its users and when each was last seen.

    Each is "installed" (attached and up to date), "outdated" (attached, but
    the table changed or another sqlnotify version made it: the next start
    of its notifier replaces it) or "orphaned" (a function without its
    trigger).  On PostgreSQL, also the fill level of the server's
    notification queue.
    """
    engine = _open(url)
    with _readable_errors():
        rows, extra = _status_rows(engine)
    engine.dispose()
    if redis_url is not None:
        extra["relays"] = _relays(redis_url, stream_prefix)
    if as_json:
        click.echo(json.dumps({"objects": rows, **extra}, indent=2, default=str))
        return
    if not rows:
        click.echo("no sqlnotify triggers installed")
    else:
        headers = ("STATE", "TABLE", "OPERATION", "CHANNEL")
        lines = [
            (
                r.get("state", ""),
                f"{r['schema']}.{r['table']}" if r.get("schema") else str(r.get("table")),
                str(r.get("operation")),
                str(r.get("channel")),
            )
            for r in rows
        ]
        widths = [max(len(x) for x in col) for col in zip(headers, *lines, strict=True)]
        click.echo("  ".join(v.ljust(w) for v, w in zip(headers, widths, strict=True)).rstrip())
        for row, line in zip(rows, lines, strict=True):
            click.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
            for text in _ownership_lines(row):
                click.echo("    " + text)
    for table in extra.get("overflow_tables", []):
        rows = table["rows"]
        count = "locked, not counted" if rows is None else f"{rows} stored payload(s)"
        click.echo(f"overflow table {table['schema']}.{table['table']}: {count}")
    if "change_log" in extra:
        click.echo(f"change log: {extra['change_log'].get('rows')} row(s)")
    if "notification_queue_usage" in extra:
        click.echo(f"notification queue usage: {extra['notification_queue_usage']:.4%}")
    for r in extra.get("relays", []):
        click.echo(
            f"relay {r['name']} on {r['host']} pid {r['pid']}:"
            f" {'active' if r['active'] else 'standing by'}, {r['written']} entries written,"
            f" lag {r['lag_events']}{'+' * bool(r.get('lag_capped'))} event(s)"
            f" / {r['lag_seconds']:.3f} s,"
            f" last error: {r['last_error'] or 'none'}"
        )
    if redis_url is not None and not extra.get("relays"):
        click.echo("no relay publishes its health under this stream prefix")


@click.command()
@_app_option
def install(app: str) -> None:
    """Install or update the triggers your notifier declares, without listening.

    For deploy scripts: run it once per release, and let the application
    start without DDL rights.
    """
    notifier = load_notifier(app)
    _check_connect(_engine_of(notifier))
    with _readable_errors():
        states = notifier.install()
    for state in states:
        click.echo(f"{state.state}: {state.watch.describe()} (channel {state.watch.channel})")


@click.command()
@_app_option
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=None,
    help="Remove triggers nobody used for this many seconds (default: the notifier's"
    " cleanup_grace). A trigger a live notifier uses always stays.",
)
def uninstall(app: str, grace: float | None) -> None:
    """Remove the triggers your notifier declares, unless another notifier uses them."""
    notifier = load_notifier(app)
    _check_connect(_engine_of(notifier))
    if grace is not None:
        notifier._policy = dataclasses.replace(notifier.policy, grace=grace)
    with _readable_errors():
        dropped = notifier.uninstall()
    click.echo(f"removed {dropped} trigger(s)")


@click.command()
@_app_option
def sql(app: str) -> None:
    """Print the SQL that installs your notifier's triggers (for migrations and review).

    Tables given by name are reflected, so the database must be reachable;
    nothing is changed in it.
    """
    notifier = load_notifier(app)
    _check_connect(_engine_of(notifier))
    with _readable_errors():
        statements = notifier.ddl()
    for stmt in statements:
        click.echo(stmt.rstrip() + ";\n")


def _engine_of(notifier: Notifier) -> sa.Engine:
    engine = notifier.db_engine
    return engine if isinstance(engine, sa.Engine) else engine.sync_engine


@click.command()
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="How long the writer process runs.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1.0, max=1000.0),
    default=20.0,
    show_default=True,
    help="Changes per second the writer makes.",
)
def demo(seconds: float, rate: float) -> None:
    """Watch a table in a temporary SQLite file while another process changes it.

    Prints each event as it arrives with the time from write to receipt,
    stops after --seconds (or on Ctrl-C) and removes the temporary file.
    Needs nothing but Python's own sqlite3.
    """
    raise SystemExit(run_demo(seconds, rate, echo=click.echo))


#: Every command of the ``sqlnotify`` group.
COMMANDS = (demo, listen, status, install, uninstall, sql)
