"""``clarion segments serve``: the one process of a deployment that holds the segment index (``segments.holder``).

Start it once per deployment, on the same database and with the same ``CLARION_SECRET_KEY`` as the others, and
start every ``clarion serve``/``api``/``worker`` with ``CLARION_SEGMENTS_URL`` pointing at it: they then build no
index of their own and ask this process for segment counts, samples and audiences."""

from __future__ import annotations

import logging
from typing import Annotated

import typer
import uvicorn
from rich.console import Console

from clarion import bootstrap
from clarion.segments import holder
from clarion.settings import Settings
from clarion.store import migrate as migrations

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="The segment holder of a deployment of several processes."
)
console = Console(stderr=True)


@app.callback()
def segments() -> None:
    """The segment index of a deployment: ``clarion segments serve`` holds it for every other process."""


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="listen address (CLARION_SEGMENTS_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="listen port (CLARION_SEGMENTS_PORT)")] = None,
    log_level: Annotated[str, typer.Option(help="log level")] = "info",
) -> None:
    """Build the segment index, follow the store's changes, and answer the deployment's other processes."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    migrations.upgrade(settings.database_url)
    services, segments = bootstrap.build_holder(settings)
    host, port = host or settings.segments_host, port or settings.segments_port
    console.print(f"[bold]Clarion segment holder[/] on http://{host}:{port}")
    served = holder.create_app(
        segments,
        services.secret_key,
        on_start=lambda: services.start(workers=0),
        on_stop=services.close,
    )
    uvicorn.run(served, host=host, port=port, log_level=log_level.lower(), access_log=False, loop="uvloop")


if __name__ == "__main__":  # python -m clarion.cli_segments serve, as tests/processes.py starts it
    app()
