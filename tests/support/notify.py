"""A real AF_UNIX datagram socket standing in for systemd's NOTIFY_SOCKET."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path


class NotifyListener:
    """Binds ``path`` (a filesystem socket) or, without one, an abstract ``@`` address, and collects every
    sd_notify datagram with its arrival time (``time.monotonic()``) on a thread. ``name`` is the value for
    ``NOTIFY_SOCKET``."""

    def __init__(self, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            self.name = f"@edge-agent-test-{uuid.uuid4().hex}"
            self.sock.bind(b"\0" + self.name[1:].encode())
        else:
            self.name = str(path)
            self.sock.bind(self.name)
        self.sock.settimeout(0.05)
        self._messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._collect, name="test-notify", daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._done.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            with self._lock:
                self._messages.append((time.monotonic(), data))

    def snapshot(self) -> list[tuple[float, str]]:
        """Every ``(arrival, message)`` so far."""
        with self._lock:
            return list(self._messages)

    def texts(self, settle_s: float = 0.0) -> list[str]:
        """The messages so far, after waiting ``settle_s`` s for datagrams still in flight."""
        time.sleep(settle_s)
        return [m for _, m in self.snapshot()]

    def wait_for(self, prefix: str, after: float, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> float:
        """Arrival time of the first message starting with ``prefix`` that arrived after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, m in self.snapshot():
                if t > after and m.startswith(prefix):
                    return t
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"daemon exited with {proc.returncode} before {prefix!r}")
            time.sleep(0.05)
        raise AssertionError(f"no {prefix!r} within {timeout} s; got {self.texts()}")

    def count(self, text: str, start: float, end: float) -> int:
        """How many messages equal to ``text`` arrived in ``(start, end]``."""
        return sum(1 for t, m in self.snapshot() if start < t <= end and m == text)

    def close(self) -> None:
        self._done.set()
        self._thread.join(5)
        self.sock.close()
