"""Deliveries written as JSON lines: the embedded default and the benchmark's provider.

It has no outside system to wait for, so it must cost little: each batch becomes one ``os.write`` per
channel file (``O_APPEND``, so concurrent writers never interleave inside a line), serialised with orjson.
Small appends run inline; big ones, and any fsync, go to a thread so the event loop keeps moving.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import ClassVar

import orjson

from clarion.channels.base import ProviderConfig
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

#: appends larger than this are handed to a thread
INLINE_LIMIT = 256 * 1024
_DUMPS_OPTIONS = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


class FileProvider:
    """Appends each delivery to ``<directory>/<channel>.jsonl``."""

    kind: ClassVar[str] = "file"
    channels: ClassVar[frozenset[Channel]] = frozenset(Channel)

    class Config(ProviderConfig):
        directory: str = "var/outbox"
        fsync: bool = False

    def __init__(self, config: FileProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        self._directory_ready = False

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        at = datetime.now(UTC).isoformat()
        results: dict[int, SendResult] = {}
        groups: dict[str, tuple[list[int], list[bytes]]] = {}
        for index, item in enumerate(batch):
            record = {
                "delivery_id": item.delivery_id,
                "message_id": item.message_id,
                "user_id": item.user_id,
                "channel": item.channel,
                "address": item.address,
                "content": item.content,
                "attempt": item.attempt,
                "at": at,
            }
            try:
                line = orjson.dumps(record, default=str, option=_DUMPS_OPTIONS)
            except (TypeError, orjson.JSONEncodeError) as exc:
                error = PermanentSendError(f"delivery is not JSON-serialisable: {exc}", code="invalid_content")
                results[index] = SendResult(item.delivery_id, error=error)
                continue
            indexes, lines = groups.setdefault(str(item.channel), ([], []))
            indexes.append(index)
            lines.append(line)

        for channel, (indexes, lines) in groups.items():
            data = b"".join(lines)
            try:
                if self.config.fsync or len(data) > INLINE_LIMIT:
                    await asyncio.to_thread(self._append, channel, data)
                else:
                    self._append(channel, data)
            except OSError as exc:
                io_error = TransientSendError(f"cannot write {channel}.jsonl: {exc}", code="io_error")
                for index in indexes:
                    results[index] = SendResult(batch[index].delivery_id, error=io_error)
                continue
            for index in indexes:
                delivery_id = batch[index].delivery_id
                results[index] = SendResult(delivery_id, provider_message_id=f"file:{delivery_id}")
        return [results[index] for index in range(len(batch))]

    def _append(self, channel: str, data: bytes) -> None:
        """One append of whole lines; the directory is created on first use (and again if removed)."""
        path = os.path.join(self.config.directory, f"{channel}.jsonl")
        if not self._directory_ready:
            os.makedirs(self.config.directory, exist_ok=True)
            self._directory_ready = True
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except FileNotFoundError:
            os.makedirs(self.config.directory, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.config.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    async def close(self) -> None:
        """Nothing is held open between batches."""
