"""Logging for the daemon: level, plain or journald format, and rate-limited repeats.

``journal`` format: no timestamps (journald adds them) and a ``<N>`` syslog-priority prefix on every line,
which journald turns into the entry's PRIORITY (``SyslogLevelPrefix=yes`` is its default).
``plain`` format: timestamps, for terminals and files. ``auto`` picks journal when stderr is the stream
systemd connected to the journal (``$JOURNAL_STREAM`` names its device:inode).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from edge_agent.settings import LoggingSettings

JOURNAL_STREAM_ENV = "JOURNAL_STREAM"
PLAIN_FORMAT = "%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s: %(message)s"
PLAIN_DATEFMT = "%Y-%m-%d %H:%M:%S"

# sd-daemon(3) priorities
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

_HANDLER_MARK = "_edge_agent_handler"


def syslog_priority(levelno: int) -> int:
    """The syslog priority for a logging level (levels between the named ones round to the more severe)."""
    for level in sorted(_SYSLOG_PRIORITY, reverse=True):
        if levelno >= level:
            return _SYSLOG_PRIORITY[level]
    return 7


def stream_is_journal(env: Mapping[str, str], stream: TextIO) -> bool:
    """True if ``stream`` is the journal stream systemd gave us (``$JOURNAL_STREAM`` = ``dev:inode`` of it)."""
    value = env.get(JOURNAL_STREAM_ENV)
    if not value:
        return False
    try:
        dev_s, ino_s = value.split(":", 1)
        dev, ino = int(dev_s), int(ino_s)
        st = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return st.st_dev == dev and st.st_ino == ino


def resolve_format(fmt: str, env: Mapping[str, str], stream: TextIO) -> str:
    """``auto`` -> ``journal`` when ``stream`` goes to journald, else ``plain``; others are returned as is."""
    if fmt == "auto":
        return "journal" if stream_is_journal(env, stream) else "plain"
    if fmt not in ("plain", "journal"):
        raise ValueError(f"logging.format {fmt!r}: expected auto, plain or journal")
    return fmt


class JournalFormatter(logging.Formatter):
    """``<N>logger: message`` on every line (tracebacks included), no timestamp."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])


class RateLimitFilter(logging.Filter):
    """Lets the same message through at most once per ``interval_s`` seconds.

    "The same message" is the same logger, level and format string (arguments may differ, so a flood of
    ``"frame %d dropped"`` counts as one message). The first record after a suppressed stretch says how
    many were suppressed. ``interval_s`` 0 lets everything through.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        if interval_s < 0:
            raise ValueError(f"rate limit interval must be >= 0 seconds, got {interval_s}")
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        # key -> (time it last passed, suppressed since then)
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.interval_s == 0:
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._seen.get(key)
            if last is not None and now - last[0] < self.interval_s:
                self._seen[key] = (last[0], last[1] + 1)
                return False
            suppressed = last[1] if last is not None else 0
            self._seen[key] = (now, 0)
            if len(self._seen) > 4096:  # bound memory: forget entries whose window has passed
                self._seen = {k: v for k, v in self._seen.items() if now - v[0] < self.interval_s or k == key}
        if suppressed:
            text = record.getMessage()
            record.msg = "%s [%d similar messages suppressed in the last %.0f s]"
            record.args = (text, suppressed, now - last[0] if last is not None else 0.0)
        return True


def setup_logging(
    settings: LoggingSettings,
    *,
    stream: TextIO | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Configure the root logger from ``settings`` (idempotent: replaces the handler a previous call installed).

    Returns the format in effect ("plain" or "journal"). ``stream`` defaults to stderr, ``env`` to os.environ.
    """
    out = stream if stream is not None else sys.stderr
    fmt = resolve_format(settings.format, env if env is not None else os.environ, out)
    handler = logging.StreamHandler(out)
    if fmt == "journal":
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATEFMT))
    handler.addFilter(RateLimitFilter(settings.rate_limit_s))
    setattr(handler, _HANDLER_MARK, True)

    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, _HANDLER_MARK, False):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(settings.level)
    logging.captureWarnings(True)
    return fmt
