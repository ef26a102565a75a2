"""``clarion campaign …``: the campaign API from the command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="Campaigns.", no_args_is_help=True)
