"""``clarion users …``: user data in bulk."""

from __future__ import annotations

import typer

app = typer.Typer(help="Users in bulk.", no_args_is_help=True)
