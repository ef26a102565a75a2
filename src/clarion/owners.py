"""Who holds a lease: this process's name for itself, and whether the process a lease names still runs.

A lease owner is ``host:pid:start:role``. ``start`` tells this process apart from any other that had or will
have the same pid: the kernel's boot id, the pid namespace and the process's start time in clock ticks (field 22
of ``/proc/<pid>/stat``). A worker that starts can then take back at once the leases of an earlier process on
this host that is gone — killed, crashed, its pid perhaps reused since — instead of waiting for them to expire.

Only what can be known is judged: an owner on another host, in another pid namespace, from before a reboot, or
without a start (an older Clarion, a system without ``/proc``) may still be running for all this process can
tell, so its leases are left to expire. ``role`` keeps the several workers of one process apart.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

UNKNOWN = "-"  # the start of a process on a system without /proc


@dataclass(frozen=True, slots=True)
class Owner:
    """A lease owner's name, read back: ``host:pid:start:role``."""

    host: str
    pid: int
    start: str
    role: str

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}:{self.role}"


def parse(owner: str) -> Owner | None:
    """The parts of an owner written by ``Host.owner``; None for any other text (a test's or an older name)."""
    parts = owner.split(":", 3)
    if len(parts) != 4 or not parts[1].isdigit() or parts[2].count(".") != 2:
        return None
    return Owner(parts[0], int(parts[1]), parts[2], parts[3])


class Host:
    """This host as ``/proc`` shows it; tests point ``proc`` at a directory of their own."""

    def __init__(self, proc: Path = Path("/proc"), *, hostname: str | None = None) -> None:
        self.proc = proc
        self.hostname = hostname if hostname is not None else socket.gethostname()
        self.machine = f"{self._boot_id()}.{self._pid_namespace()}"  # boot id and pid namespace

    def _boot_id(self) -> str:
        try:
            return (self.proc / "sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:12] or UNKNOWN
        except OSError:
            return UNKNOWN

    def _pid_namespace(self) -> str:
        try:
            link = os.readlink(self.proc / "self/ns/pid")  # "pid:[4026531836]"
        except OSError:
            return UNKNOWN
        return "".join(c for c in link if c.isdigit()) or UNKNOWN

    def started(self, pid: int) -> str | None:
        """Process ``pid``'s start time in clock ticks since boot; None if it is not running (a zombie is not)."""
        try:
            stat = (self.proc / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[-1].split()  # the command name, in parentheses, may hold anything
        if len(fields) < 20 or fields[0] in ("Z", "X"):
            return None
        return fields[19]

    def owner(self, role: str, *, pid: int | None = None) -> str:
        """The lease owner name of process ``pid`` (this one by default) in ``role``."""
        pid = os.getpid() if pid is None else pid
        ticks = self.started(pid) if UNKNOWN not in self.machine else None
        start = f"{self.machine}.{ticks}" if ticks is not None else f"{UNKNOWN}.{UNKNOWN}.{UNKNOWN}"
        return str(Owner(self.hostname, pid, start, role))

    def gone(self, owner: str) -> str | None:
        """Why the process named by ``owner`` is known not to run any more, or None if it may still run."""
        parsed = parse(owner)
        if parsed is None or parsed.host != self.hostname or UNKNOWN in parsed.start:
            return None
        machine, ticks = parsed.start.rsplit(".", 1)
        if machine != self.machine:
            return None  # another boot, another pid namespace, or another machine of the same name
        now = self.started(parsed.pid)
        if now is None:
            return f"worker {parsed.host}:{parsed.pid} is not running"
        if now != ticks:
            return f"worker {parsed.host}:{parsed.pid} is not running (its pid now belongs to another process)"
        return None
