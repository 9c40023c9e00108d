"""systemd's sd_notify protocol without dependencies: one datagram to ``$NOTIFY_SOCKET`` per message.

Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op that returns False. ``NOTIFY_SOCKET`` is an
absolute path or an abstract socket name written ``@name`` (sent with a leading NUL byte). Messages are
newline-separated ``KEY=VALUE`` assignments (see sd_notify(3)). Sending failures are logged, never raised:
the daemon must not die because the service manager went away.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger(__name__)

NOTIFY_SOCKET_ENV = "NOTIFY_SOCKET"
WATCHDOG_USEC_ENV = "WATCHDOG_USEC"
WATCHDOG_PID_ENV = "WATCHDOG_PID"


def socket_address(value: str | None) -> str | bytes | None:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value, or None if notifications are off.

    ``/run/systemd/notify`` -> the path; ``@name`` -> ``b"\\0name"`` (Linux abstract namespace).
    Raises ValueError for a value systemd would not set for us (e.g. a relative path or ``vsock:``).
    """
    if not value:
        return None
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    raise ValueError(
        f"{NOTIFY_SOCKET_ENV}={value!r} is not an absolute path or @abstract name; "
        "unset it, or run under a systemd that uses AF_UNIX notification sockets"
    )


def _one_line(text: str) -> str:
    """STATUS= values end at the first newline; keep the whole text on one line instead."""
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify messages to one socket address (None: disabled, every call returns False)."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._warned = False

    @classmethod
    def from_env(cls) -> Notifier:
        return cls(socket_address(os.environ.get(NOTIFY_SOCKET_ENV)))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram. True if it was sent."""
        if self.address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            # non-blocking: a full receive queue (a stalled manager) must never stall the daemon's main loop
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            if not self._warned:  # once: a gone manager would otherwise flood the log at the ping rate
                log.warning("sd_notify to %r failed: %s (further failures are logged at debug level)",
                            self.address, exc)
                self._warned = True
            else:
                log.debug("sd_notify to %r failed: %s", self.address, exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        lines = ["READY=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.send(*lines)

    def reloading(self) -> bool:
        """``RELOADING=1`` with ``MONOTONIC_USEC`` (required by systemd >= 253); send ready() when done."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def stopping(self, status: str | None = None) -> bool:
        lines = ["STOPPING=1"]
        if status is not None:
            lines.append(f"STATUS={_one_line(status)}")
        return self.send(*lines)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={_one_line(text)}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start-up/stop time (``EXTEND_TIMEOUT_USEC``), e.g. before a slow model load."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def watchdog_interval() -> float | None:
    """The watchdog timeout systemd expects pings within (seconds), or None if there is no watchdog for us.

    From ``$WATCHDOG_USEC``; when ``$WATCHDOG_PID`` is set it must be this process (else the watchdog is
    meant for another process, e.g. our parent). Raises ValueError for a malformed value.
    """
    usec = os.environ.get(WATCHDOG_USEC_ENV)
    if not usec:
        return None
    pid = os.environ.get(WATCHDOG_PID_ENV)
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        raise ValueError(f"{WATCHDOG_USEC_ENV}={usec!r} is not an integer number of microseconds") from None
    if value <= 0:
        raise ValueError(f"{WATCHDOG_USEC_ENV}={usec!r} must be a positive number of microseconds")
    return value / 1_000_000


# Module-level conveniences: read $NOTIFY_SOCKET at each call (cheap), like sd_notify(3).
def ready(status: str | None = None) -> bool:
    return Notifier.from_env().ready(status)


def reloading() -> bool:
    return Notifier.from_env().reloading()


def stopping(status: str | None = None) -> bool:
    return Notifier.from_env().stopping(status)


def watchdog() -> bool:
    return Notifier.from_env().watchdog()


def status(text: str) -> bool:
    return Notifier.from_env().status(text)
