"""The file provider writes real files: one JSON line per delivery, appended per channel."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson

from clarion.channels import file as file_module
from clarion.channels.file import FileProvider
from clarion.domain.errors import TransientSendError
from clarion.domain.model import Channel, Outgoing


def outgoing(n: int, channel: Channel = Channel.EMAIL, **content: object) -> Outgoing:
    addresses = {Channel.EMAIL: f"u{n}@example.com", Channel.SMS: "+8613800138000", Channel.PUSH: ["tok-a"]}
    return Outgoing(
        delivery_id=f"d{n}",
        message_id=f"m{n}",
        user_id=f"u{n}",
        channel=channel,
        address=addresses.get(channel, f"u{n}"),
        content=content or {"subject": "你好", "text": f"正文 {n}"},
        attempt=2,
    )


def read_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


async def test_writes_one_line_per_delivery_per_channel_file(tmp_path: Path) -> None:
    directory = tmp_path / "out" / "box"
    provider = FileProvider(FileProvider.Config(directory=str(directory)), name="file")
    assert not directory.exists()  # created lazily, on the first write

    batch = [
        outgoing(1),
        outgoing(2, Channel.SMS, text="验证码 1234"),
        outgoing(3),
        outgoing(4, Channel.PUSH),
    ]
    results = await provider.send(batch)

    assert [r.delivery_id for r in results] == ["d1", "d2", "d3", "d4"]
    assert [r.provider_message_id for r in results] == ["file:d1", "file:d2", "file:d3", "file:d4"]
    assert all(r.error is None for r in results)
    assert sorted(p.name for p in directory.iterdir()) == ["email.jsonl", "push.jsonl", "sms.jsonl"]

    emails = read_lines(directory / "email.jsonl")
    assert [e["delivery_id"] for e in emails] == ["d1", "d3"]
    first = emails[0]
    assert set(first) == {
        "delivery_id",
        "message_id",
        "user_id",
        "channel",
        "address",
        "content",
        "attempt",
        "at",
    }
    assert first["content"] == {"subject": "你好", "text": "正文 1"}
    assert (first["message_id"], first["user_id"], first["channel"], first["attempt"]) == (
        "m1",
        "u1",
        "email",
        2,
    )
    at = datetime.fromisoformat(first["at"])
    assert at.utcoffset() is not None and at.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - at).total_seconds()) < 60
    assert read_lines(directory / "sms.jsonl")[0]["content"] == {"text": "验证码 1234"}
    assert read_lines(directory / "push.jsonl")[0]["address"] == ["tok-a"]
    await provider.close()


async def test_appends_across_batches(tmp_path: Path) -> None:
    provider = FileProvider(FileProvider.Config(directory=str(tmp_path), fsync=True), name="file")
    await provider.send([outgoing(1)])
    await provider.send([outgoing(2), outgoing(3)])
    assert [e["delivery_id"] for e in read_lines(tmp_path / "email.jsonl")] == ["d1", "d2", "d3"]


async def test_large_batch_goes_through_a_thread_and_stays_whole(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(file_module, "INLINE_LIMIT", 1024)
    calls: list[str] = []
    real_to_thread = file_module.asyncio.to_thread

    async def spying_to_thread(func, *args):
        calls.append(args[0])
        return await real_to_thread(func, *args)

    monkeypatch.setattr(file_module.asyncio, "to_thread", spying_to_thread)
    provider = FileProvider(FileProvider.Config(directory=str(tmp_path)), name="file")
    batch = [outgoing(n, text="x" * 100, subject="s") for n in range(500)]
    results = await provider.send(batch)

    assert calls == ["email"]  # one append for the whole channel group
    assert all(r.error is None for r in results)
    assert [e["delivery_id"] for e in read_lines(tmp_path / "email.jsonl")] == [f"d{n}" for n in range(500)]


async def test_unwritable_directory_is_transient_for_the_whole_group(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the directory should be")
    provider = FileProvider(FileProvider.Config(directory=str(blocker)), name="file")
    results = await provider.send([outgoing(1), outgoing(2)])
    assert [r.delivery_id for r in results] == ["d1", "d2"]
    assert all(isinstance(r.error, TransientSendError) and r.error.code == "io_error" for r in results)
    assert all(r.provider_message_id is None for r in results)


async def test_recreates_a_removed_directory(tmp_path: Path) -> None:
    directory = tmp_path / "outbox"
    provider = FileProvider(FileProvider.Config(directory=str(directory)), name="file")
    await provider.send([outgoing(1)])
    (directory / "email.jsonl").unlink()
    directory.rmdir()
    results = await provider.send([outgoing(2)])
    assert results[0].error is None
    assert [e["delivery_id"] for e in read_lines(directory / "email.jsonl")] == ["d2"]


async def test_empty_batch_writes_nothing(tmp_path: Path) -> None:
    provider = FileProvider(FileProvider.Config(directory=str(tmp_path / "o")), name="file")
    assert await provider.send([]) == []
    assert not (tmp_path / "o").exists()


def test_config_refuses_unknown_keys_and_serves_all_channels() -> None:
    assert FileProvider.kind == "file"
    assert frozenset(Channel) == FileProvider.channels
    try:
        FileProvider.Config(directory="x", fsynk=True)
    except ValueError as exc:
        assert "fsynk" in str(exc)
    else:
        raise AssertionError("unknown config key accepted")
