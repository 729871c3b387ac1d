"""The ``relay`` command: the journal (or live events) of your watches into Redis Streams."""

from __future__ import annotations

import signal
import threading

import click

from .commands import (
    _app_option,
    _check_connect,
    _engine_of,
    _log_to_stderr,
    load_notifier,
    mask_password,
)

__all__ = ["relay"]


@click.command()
@_app_option
@click.option("--to", "to", required=True, metavar="REDIS_URL", help="redis://host:port/db")
@click.option(
    "--name",
    default="default",
    show_default=True,
    help="Relays of one name elect one active among them; the others stand by.",
)
@click.option("--stream-prefix", default="sqlnotify:", show_default=True)
@click.option(
    "--retention",
    type=click.IntRange(min=1),
    default=1_000_000,
    show_default=True,
    help="Entries kept per stream (XADD MAXLEN ~).",
)
@click.option(
    "--at-most-once",
    is_flag=True,
    help="Relay the live events of plain (not durable) watches: an event committed while"
    " no relay is active is never relayed.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log the relay's steps to stderr.")
def relay(
    app: str,
    to: str,
    name: str,
    stream_prefix: str,
    retention: int,
    at_most_once: bool,
    verbose: bool,
) -> None:
    """Append the events of your notifier's durable watches to Redis Streams.

    Run it on two machines or more: one is active, the others take over
    within seconds when it dies.  Read the streams with
    Notifier.from_redis(...).  Stops on Ctrl-C or SIGTERM.
    """
    try:
        from ..relay import Relay  # the optional ``redis`` package, imported when used
    except ImportError:
        raise click.ClickException("the relay needs: pip install redis (the redis extra)") from None
    _log_to_stderr(verbose)
    notifier = load_notifier(app)
    _check_connect(_engine_of(notifier))
    runner = Relay(
        notifier,
        to,
        name=name,
        stream_prefix=stream_prefix,
        retention=retention,
        at_most_once=at_most_once,
    )
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    click.echo(f"relay {name!r} to {mask_password(to)}: standing by", err=True)
    runner.start()
    active = False
    try:
        while not stop.wait(0.2):
            if runner.active != active:
                active = runner.active
                click.echo("active" if active else "standing by", err=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        runner.stop()
    health = runner.health()
    click.echo(f"relay stopped: {health['written']} entries written", err=True)
