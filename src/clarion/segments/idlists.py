"""Reading an uploaded ID list: one value a line (CSV: the first column), normalized for its kind.

``user_id`` values are taken as written; ``phone`` numbers become E.164 (as ``users.addresses.sms`` holds them,
read as ``clarion.domain.phones`` reads them; numbers without ``+`` need the upload's ``region``, e.g. ``CN``);
``email`` addresses are lower-cased. Blank lines are skipped, and so is a first line whose first cell is a column
name (``user_id``, ``phone``, ``email`` …). Values that cannot be an id of the kind are kept aside as invalid, to
be reported with the unknown ones."""

from __future__ import annotations

import codecs
import csv
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from clarion.domain import errors, phones

Kind = Literal["user_id", "phone", "email"]
MAX_LINES = 1_000_000
MAX_VALUE = 320
_MAX_LINE = 65_536
REPORTED = 100
HEADERS = {"user_id", "userid", "user", "uid", "id", "phone", "mobile", "msisdn", "sms", "email", "e-mail", "mail"}
_USER_ID = re.compile(r"[A-Za-z0-9_.:@-]{1,128}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")


@dataclass
class Upload:
    kind: Kind
    #: distinct normalized values, in upload order
    values: dict[str, None] = field(default_factory=dict)
    lines: int = 0
    invalid: int = 0
    invalid_values: list[str] = field(default_factory=list)


def normalize(kind: Kind, raw: str, region: str | None = None) -> str | None:
    """The value as users hold it, or None when it cannot be one."""
    value = raw.strip()
    if kind == "user_id":
        return value if _USER_ID.fullmatch(value) else None
    if kind == "email":
        return value.lower() if len(value) <= 254 and _EMAIL.fullmatch(value) else None
    try:
        return phones.normalize(value, region)
    except ValueError:
        return None


async def read(
    chunks: AsyncIterator[bytes], kind: Kind, *, is_csv: bool, region: str | None = None, max_lines: int = MAX_LINES
) -> Upload:
    """Read the upload as it streams in; more than ``max_lines`` values are refused (InvalidInput)."""
    upload = Upload(kind)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    pending = ""
    first = True

    def take(line: str) -> None:
        nonlocal first
        cell = _first_cell(line) if is_csv else line.strip()
        if not cell:
            return
        if first:
            first = False
            if cell.strip().lower() in HEADERS:
                return
        upload.lines += 1
        if upload.lines > max_lines:
            raise errors.InvalidInput(
                f"file: at most {max_lines} lines", code="list_too_long", details={"field": "file", "limit": max_lines}
            )
        value = normalize(kind, cell[:MAX_VALUE], region) if len(cell) <= MAX_VALUE else None
        if value is None:
            upload.invalid += 1
            if len(upload.invalid_values) < REPORTED:
                upload.invalid_values.append(cell[:MAX_VALUE])
        else:
            upload.values[value] = None

    try:
        async for chunk in chunks:
            pending += decoder.decode(chunk)
            *lines, pending = pending.split("\n")
            for line in lines:
                take(line)
            if len(pending) > _MAX_LINE:
                raise errors.InvalidInput("file: a line is too long", code="invalid_list", details={"field": "file"})
        pending += decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise errors.InvalidInput("file: not UTF-8 text", code="invalid_list", details={"field": "file"}) from None
    take(pending)
    return upload


def _first_cell(line: str) -> str:
    row = next(csv.reader([line]), [])
    return row[0].strip() if row else ""
