"""The ``sqlnotify`` command line (also ``python -m sqlnotify``)."""

from __future__ import annotations

import click

from . import __version__

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sqlnotify")
def main() -> None:
    """See and manage database change notifications."""


from . import _cli_commands  # noqa: E402, F401  (registers the commands)
