"""sd_notify client against real AF_UNIX datagram sockets (filesystem path and abstract namespace)."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent import sdnotify
from edge_agent.sdnotify import Notifier, socket_address, watchdog_interval


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    addr = str(tmp_path / "notify.sock")
    sock.bind(addr)
    sock.settimeout(2.0)
    yield sock, addr
    sock.close()


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    name = f"edge-agent-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(2.0)
    yield sock, "@" + name
    sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_socket_address_forms() -> None:
    assert socket_address(None) is None
    assert socket_address("") is None
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        socket_address("relative/path")
    with pytest.raises(ValueError, match="NOTIFY_SOCKET"):
        socket_address("vsock:2:1234")


def test_path_socket_receives_each_message(path_socket: tuple[socket.socket, str]) -> None:
    sock, addr = path_socket
    n = Notifier(socket_address(addr))
    assert n.enabled
    assert n.ready("running: 1 fps")
    assert _recv(sock) == ["READY=1", "STATUS=running: 1 fps"]
    assert n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert n.status("two\nlines  here")
    assert _recv(sock) == ["STATUS=two lines here"]
    assert n.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    lines = _recv(sock)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert n.extend_timeout(2.5)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=2500000"]


def test_abstract_socket_via_env(abstract_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch) -> None:
    sock, name = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    assert sdnotify.ready()
    assert _recv(sock) == ["READY=1"]
    assert sdnotify.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert sdnotify.status("ok")
    assert _recv(sock) == ["STATUS=ok"]
    assert sdnotify.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    assert sdnotify.reloading()
    assert _recv(sock)[0] == "RELOADING=1"


def test_noop_outside_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not Notifier.from_env().enabled
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False


def test_send_failure_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert n.watchdog() is False
    assert n.watchdog() is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "sd_notify" in warnings[0].getMessage()


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_USEC", "10000000")
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval() == 10.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval() is None  # meant for another process
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "ten")
    with pytest.raises(ValueError, match="WATCHDOG_USEC"):
        watchdog_interval()
    monkeypatch.setenv("WATCHDOG_USEC", "0")
    with pytest.raises(ValueError, match="positive"):
        watchdog_interval()


def test_full_receive_queue_never_blocks(path_socket: tuple[socket.socket, str]) -> None:
    _, addr = path_socket  # nobody reads: the kernel queue fills after a few datagrams
    n = Notifier(addr)
    t0 = time.monotonic()
    results = [n.watchdog() for _ in range(500)]
    assert time.monotonic() - t0 < 2.0
    assert results[0] is True and results[-1] is False
