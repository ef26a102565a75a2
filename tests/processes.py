"""``clarion api``, ``clarion worker`` and ``clarion segments serve`` as real processes of their own, for the
tests that need a second process or a real server's event loop (not a test module)."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx

from tests.integration.loopback import free_port


@contextlib.contextmanager
def api_process(env: Mapping[str, str], log: Path, *, start_timeout: float = 60) -> Iterator[str]:
    """Start ``clarion api`` on a free loopback port with ``env``, wait until ``/healthz`` answers 200, yield its
    base URL, and stop it afterwards. Its output goes to ``log``, shown if it exits before it is ready."""
    port = free_port()
    clarion = Path(sys.executable).parent / "clarion"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(clarion), "api", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            env=dict(env),
            stdout=out,
            stderr=out,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            assert process.poll() is None, f"clarion api exited: {log.read_text(errors='replace')}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "clarion api did not start"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def worker_process(
    env: Mapping[str, str], log: Path, *, loops: int = 2, start_timeout: float = 60
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``clarion worker`` with ``loops`` dispatch loops and ``env``, wait until every loop has logged that it
    started, yield the process (its ``pid`` is what a test kills), and stop it afterwards with SIGTERM, the
    graceful stop that records its last outcomes. Its output goes to ``log``, shown if it exits before it is
    ready."""
    clarion = Path(sys.executable).parent / "clarion"
    command = [str(clarion), "worker", "--workers", str(loops), "--log-level", "info"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, env=dict(env), stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + start_timeout
        while len(re.findall(r"worker \S+ started", log.read_text(errors="replace"))) < loops:
            assert process.poll() is None, f"clarion worker exited: {log.read_text(errors='replace')}"
            assert time.monotonic() < deadline, f"clarion worker did not start: {log.read_text(errors='replace')}"
            time.sleep(0.05)
        yield process
    finally:
        process.terminate()  # nothing to do if the test killed it
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def segments_process(env: Mapping[str, str], log: Path, *, start_timeout: float = 60) -> Iterator[str]:
    """Start ``clarion segments serve`` (the deployment's segment holder) on a free loopback port with ``env``,
    wait until ``/healthz`` answers 200 (it listens only once its index is built), yield its base URL, and stop
    it afterwards. Run as ``python -m clarion.cli_segments serve``, the same command ``clarion segments serve``
    runs. Its output goes to ``log``, shown if it exits before it is ready."""
    port = free_port()
    command = [sys.executable, "-m", "clarion.cli_segments", "serve", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, "--log-level", "warning"], env=dict(env), stdout=out, stderr=out)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            assert process.poll() is None, f"segment holder exited: {log.read_text(errors='replace')}"
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"segment holder did not start: {log.read_text(errors='replace')}"
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
