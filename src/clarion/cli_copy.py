"""``clarion copy``: AI copy from the command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="AI copy: drafts from a brief, checked like any template.", no_args_is_help=True)
