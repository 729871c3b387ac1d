"""The ``sqlnotify`` command line (also ``python -m sqlnotify``)."""

from __future__ import annotations

import click

from .. import __version__
from .commands import COMMANDS
from .relay import relay

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sqlnotify")
def main() -> None:
    """See and manage database change notifications."""


for _command in (*COMMANDS, relay):
    main.add_command(_command)
