"""``clarion api``, ``clarion worker`` and ``clarion segments serve`` as real processes of their own, for the
tests that need a second process or a real server's event loop (not a test module)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx

from tests.integration.loopback import free_port

CLARION = str(Path(sys.executable).parent / "clarion")


@contextlib.contextmanager
def started(
    command: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    ready: Callable[[], bool],
    *,
    start_timeout: float = 60,
    stop_timeout: float = 10,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` with ``env``, its output to ``log``; wait until ``ready()`` (the log is shown if the
    process exits or times out first), yield the process, and stop it afterwards with SIGTERM — the graceful
    stop — killing it if it does not stop within ``stop_timeout`` (nothing to do if the test killed it)."""
    name = " ".join(Path(command[0]).name if i == 0 else part for i, part in enumerate(command[:3]))
    with log.open("wb") as out:
        process = subprocess.Popen(list(command), env=dict(env), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + start_timeout
        while not ready():
            assert process.poll() is None, f"{name} exited: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"{name} did not start: {log.read_text(errors='replace')}"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        try:
            process.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(base: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    return ready


@contextlib.contextmanager
def api_process(env: Mapping[str, str], log: Path, *, start_timeout: float = 60) -> Iterator[str]:
    """Start ``clarion api`` on a free loopback port with ``env``, wait until ``/healthz`` answers 200, yield its
    base URL, and stop it afterwards. Its output goes to ``log``, shown if it exits before it is ready."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [CLARION, "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with started(command, env, log, _healthy(base), start_timeout=start_timeout):
        yield base


@contextlib.contextmanager
def worker_process(
    env: Mapping[str, str], log: Path, *, loops: int = 2, start_timeout: float = 60, args: Sequence[str] = ()
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``clarion worker`` with ``loops`` dispatch loops and ``env``, wait until every loop has logged that it
    started, yield the process (its ``pid`` is what a test kills), and stop it afterwards with SIGTERM, the
    graceful stop that records its last outcomes. Its output goes to ``log``, shown if it exits before it is
    ready."""

    def ready() -> bool:
        return len(re.findall(r"worker \S+ started", log.read_text(errors="replace"))) >= loops

    command = [CLARION, "worker", "--workers", str(loops), "--log-level", "info", *args]
    with started(command, env, log, ready, start_timeout=start_timeout, stop_timeout=15) as process:
        yield process


@contextlib.contextmanager
def segments_process(env: Mapping[str, str], log: Path, *, start_timeout: float = 60) -> Iterator[str]:
    """Start ``clarion segments serve`` (the deployment's segment holder) on a free loopback port with ``env``,
    wait until ``/healthz`` answers 200 (it listens only once its index is built), yield its base URL, and stop
    it afterwards. Its output goes to ``log``, shown if it exits before it is ready."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [CLARION, "segments", "serve", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    with started(command, env, log, _healthy(base), start_timeout=start_timeout):
        yield base
