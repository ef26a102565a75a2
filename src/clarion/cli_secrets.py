"""``clarion secrets …``: the provider secrets sealed at rest under a key derived from the secret key.

Changing the secret key (``CLARION_SECRET_KEY``, or the generated ``<data dir>/secret_key``):

1. stop every Clarion process (one still running with the old key cannot open what is sealed under the new);
2. keep the old key in a file (``mv var/secret_key var/secret_key.old``, or write the old ``CLARION_SECRET_KEY``
   to a file of mode 0600);
3. configure the new key (set ``CLARION_SECRET_KEY``; with no key configured a new one is generated);
4. ``clarion secrets rotate --old-key-file var/secret_key.old``: every provider account is re-sealed under the
   new key in one transaction — a provider neither key opens stops it, naming the provider, with nothing
   changed; running it again changes nothing;
5. start Clarion, then delete the old key file.

The same key signs the built-in webhook provider's requests and the unsubscribe links, so those change with it.
Accounts stored before sealing existed are sealed by ``clarion secrets rotate`` with no ``--old-key-file``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sqlite3
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console

from clarion import bootstrap, sealing
from clarion.channels import registry
from clarion.settings import Settings
from clarion.store.db import Database

app = typer.Typer(help="Provider secrets sealed at rest.", no_args_is_help=True)
console = Console(stderr=True)


def _actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"[:128]
    except (OSError, KeyError):
        return "cli"


def _compact_sqlite(url: str) -> None:
    """Rewrite a SQLite file so the pages that held the old sealing (or, before it, secrets in clear) are gone."""
    path = sa.make_url(url).database
    if not path or path == ":memory:":
        return
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


async def _reseal(settings: Settings, old: sealing.Sealer | None, new: sealing.Sealer) -> dict[str, int]:
    db = Database(settings.database_url)
    try:
        return await registry.reseal(db, old, new, actor=_actor())
    finally:
        await db.close()


@app.command("rotate")
def rotate(
    old_key_file: Annotated[
        Path | None,
        typer.Option(help="a file holding the previous secret key (e.g. a copy of var/secret_key)", dir_okay=False),
    ] = None,
) -> None:
    """Re-seal every provider account's secrets under the configured secret key (see ``clarion secrets --help``
    for the steps of changing the key). The previous key is read from ``--old-key-file`` or, if that is not
    given, from ``CLARION_OLD_SECRET_KEY``; with neither, only accounts still stored in clear are sealed."""
    settings = Settings()
    if old_key_file is not None:
        try:
            old_key = old_key_file.read_text().strip()
        except OSError as exc:
            raise typer.BadParameter(
                f"cannot read {old_key_file}: {exc.strerror}", param_hint="--old-key-file"
            ) from None
    else:
        old_key = os.environ.get("CLARION_OLD_SECRET_KEY", "").strip()
    if old_key_file is not None and not old_key:
        raise typer.BadParameter(f"{old_key_file} is empty", param_hint="--old-key-file")
    new = sealing.Sealer(bootstrap.secret_key(settings))
    old = sealing.Sealer(old_key) if old_key else None
    try:
        counts = asyncio.run(_reseal(settings, old, new))
    except sealing.Unreadable as exc:
        console.print(f"[red]nothing was changed:[/] {exc.message}")
        raise typer.Exit(1) from None
    if settings.is_sqlite and (counts["resealed"] or counts["sealed"]):
        _compact_sqlite(settings.database_url)
    typer.echo(
        f"provider secrets sealed under key {new.key_id}: {counts['resealed']} re-sealed, "
        f"{counts['sealed']} sealed (were in clear), {counts['unchanged']} already under this key"
    )
