"""The ``sqlnotify`` command line (also ``python -m sqlnotify``)."""

from __future__ import annotations

import click

from . import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sqlnotify")
def main() -> None:
    """See and manage database change notifications."""


@main.command()
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
    from ._demo import run_demo

    raise SystemExit(run_demo(seconds, rate, echo=click.echo))


from . import _cli_commands  # noqa: E402, F401  (registers the commands)
