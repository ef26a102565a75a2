"""Lease owners name host, pid and process start, and a process of this host that is gone is told apart from one
that runs — including a pid the kernel has since given to another process. Here ``/proc`` is a directory of the
test's own, so each case is exact; ``tests/integration/test_outbox.py`` judges real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clarion import owners

BOOT = "698ec5d2-b3a6-4c1e-9d0a-2f1e3c4b5a69"


def fake_proc(root: Path, processes: dict[int, tuple[str, int]], *, namespace: str = "4026531836") -> owners.Host:
    """A /proc with this boot id and pid namespace, and each pid's (state, start ticks)."""
    (root / "sys/kernel/random").mkdir(parents=True)
    (root / "sys/kernel/random/boot_id").write_text(BOOT + "\n")
    (root / "self/ns").mkdir(parents=True)
    os.symlink(f"pid:[{namespace}]", root / "self/ns/pid")
    for pid, (state, ticks) in processes.items():
        (root / str(pid)).mkdir()
        # the command name is in parentheses and may itself hold spaces and parentheses
        fields = [state, *["0"] * 18, str(ticks), *["0"] * 30]
        (root / str(pid) / "stat").write_text(f"{pid} (clarion (worker) x) {' '.join(fields)}\n")
    return owners.Host(root, hostname="node-7")


def test_an_owner_names_host_pid_start_and_role(tmp_path: Path) -> None:
    host = fake_proc(tmp_path, {4242: ("S", 981234)})
    name = host.owner("0", pid=4242)
    assert name == "node-7:4242:698ec5d2b3a6.4026531836.981234:0"
    assert owners.parse(name) == owners.Owner("node-7", 4242, "698ec5d2b3a6.4026531836.981234", "0")
    assert host.gone(name) is None  # it runs
    assert host.gone(name + "#completing") is None


def test_a_pid_that_runs_nothing_is_gone(tmp_path: Path) -> None:
    host = fake_proc(tmp_path, {4242: ("S", 981234)})
    name = host.owner("campaigns", pid=4242)
    (tmp_path / "4242/stat").unlink()
    (tmp_path / "4242").rmdir()
    assert host.gone(name) == "worker node-7:4242 is not running"


def test_a_zombie_is_gone(tmp_path: Path) -> None:
    host = fake_proc(tmp_path, {4242: ("Z", 981234)})
    name = str(owners.Owner("node-7", 4242, "698ec5d2b3a6.4026531836.981234", "0"))
    assert host.gone(name) == "worker node-7:4242 is not running"


def test_a_reused_pid_is_told_apart_by_its_start(tmp_path: Path) -> None:
    host = fake_proc(tmp_path, {4242: ("R", 990000)})  # the pid now runs something that started later
    name = str(owners.Owner("node-7", 4242, "698ec5d2b3a6.4026531836.981234", "1"))
    assert host.gone(name) == "worker node-7:4242 is not running (its pid now belongs to another process)"


@pytest.mark.parametrize(
    "name",
    [
        "node-8:4242:698ec5d2b3a6.4026531836.981234:0",  # another host
        "node-7:4242:0123456789ab.4026531836.981234:0",  # this host's name before a reboot, or another machine's
        "node-7:4242:698ec5d2b3a6.4026532999.981234:0",  # another pid namespace (another container)
        "node-7:4242:-.-.-:0",  # a process that could not read its start
        "node-7:4242:0",  # an older Clarion's name
        "test-worker",
        "",
    ],
)
def test_owners_this_host_cannot_judge_are_left_alone(tmp_path: Path, name: str) -> None:
    host = fake_proc(tmp_path, {})  # pid 4242 runs nothing here
    assert host.gone(name) is None


def test_without_proc_a_process_names_no_start_and_judges_nobody(tmp_path: Path) -> None:
    host = owners.Host(tmp_path / "missing", hostname="node-7")
    name = host.owner("0", pid=4242)
    assert name == "node-7:4242:-.-.-:0"
    assert host.gone(name) is None
    assert host.gone("node-7:4242:698ec5d2b3a6.4026531836.981234:0") is None


def test_this_process_on_the_real_proc_is_running() -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc on this system")
    host = owners.Host()
    name = host.owner("0")
    assert owners.parse(name) is not None and "-" not in name.split(":")[2]
    assert host.gone(name) is None
