"""A real redis-server for tests: started on a free loopback port, no persistence, stopped by its pid."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

import pytest

INSTALL_HINT = (
    "redis-server not found on PATH; install it with `apt-get install redis-server` (Debian/Ubuntu)"
)


def free_port() -> int:
    """Ask the kernel for a free loopback TCP port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_redis_binary() -> str:
    """Return the redis-server path; skip the test locally, fail it under CI=true, when it is missing."""
    path = shutil.which("redis-server")
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(INSTALL_HINT + " (CI=true: Redis tests must run, not skip)")
        pytest.skip(INSTALL_HINT)
    return path


class RedisServer:
    """One private redis-server process that tests can stop, kill, pause and restart on the same port."""

    def __init__(self, binary: str, *extra_args: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self._dir = tempfile.mkdtemp(prefix="promptcache-redis-")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", self._dir,
            "--daemonize", "no",
            "--protected-mode", "no",
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"redis-server exited with {self.proc.returncode} on port {self.port}"
                raise RuntimeError(msg)
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer PING on port {self.port} within 10 s")

    def ping(self) -> bool:
        """True when the server answers PING (raw RESP, so the check does not depend on redis-py)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *parts: str) -> bytes:
        """Send one inline command and return the raw first reply chunk."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(" ".join(parts).encode() + b"\r\n")
            return sock.recv(65536)

    def kill(self) -> None:
        """SIGKILL by pid: the abrupt death a crashed or OOM-killed Redis shows its clients."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        """SIGTERM by pid, then wait; falls back to SIGKILL."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def wait_until(predicate: object, timeout: float = 5.0) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return True
        time.sleep(0.01)
    return False


def remove_dir(path: str) -> None:
    shutil.rmtree(Path(path), ignore_errors=True)
