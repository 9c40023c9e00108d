"""Logging setup: journal vs plain format, syslog priority prefixes, rate-limited repeats."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.logsetup import (
    JournalFormatter,
    RateLimitFilter,
    resolve_format,
    setup_logging,
    stream_is_journal,
    syslog_priority,
)
from edge_agent.settings import LoggingSettings


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logging.captureWarnings(False)


def _record(msg: str, *args: object, level: int = logging.INFO, name: str = "x") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def test_syslog_priorities() -> None:
    assert syslog_priority(logging.DEBUG) == 7
    assert syslog_priority(logging.INFO) == 6
    assert syslog_priority(logging.WARNING) == 4
    assert syslog_priority(logging.ERROR) == 3
    assert syslog_priority(logging.CRITICAL) == 2
    assert syslog_priority(logging.INFO + 5) == 6
    assert syslog_priority(1) == 7


def test_journal_formatter_prefixes_every_line() -> None:
    fmt = JournalFormatter()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("edge_agent.x", logging.ERROR, __file__, 1, "failed %s", ("now",), sys.exc_info())
    lines = fmt.format(rec).splitlines()
    assert lines[0] == "<3>edge_agent.x: failed now"
    assert len(lines) > 2 and all(line.startswith("<3>") for line in lines)
    assert lines[-1] == "<3>RuntimeError: boom"


def test_journal_stream_detection(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as f:
        st = os.fstat(f.fileno())
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert stream_is_journal(env, f)
        assert resolve_format("auto", env, f) == "journal"
        assert not stream_is_journal({"JOURNAL_STREAM": "1:2"}, f)
        assert not stream_is_journal({"JOURNAL_STREAM": "garbage"}, f)
        assert resolve_format("auto", {}, f) == "plain"
        assert resolve_format("journal", {}, f) == "journal"
        assert resolve_format("plain", env, f) == "plain"
    assert not stream_is_journal(env, io.StringIO())  # no file descriptor


def test_rate_limit_filter_suppresses_and_reports() -> None:
    now = [0.0]
    flt = RateLimitFilter(10.0, clock=lambda: now[0])
    assert flt.filter(_record("frame %d dropped", 1))
    for i in range(5):
        now[0] += 1.0
        assert not flt.filter(_record("frame %d dropped", i + 2))
    assert flt.filter(_record("another message"))  # a different message is not limited
    assert flt.filter(_record("frame %d dropped", 1, level=logging.WARNING))  # nor another level
    now[0] = 10.5
    rec = _record("frame %d dropped", 99)
    assert flt.filter(rec)
    assert rec.getMessage() == "frame 99 dropped [5 similar messages suppressed in the last 10 s]"
    now[0] = 21.0
    rec = _record("frame %d dropped", 100)
    assert flt.filter(rec)
    assert rec.getMessage() == "frame 100 dropped"


def test_rate_limit_zero_disables() -> None:
    flt = RateLimitFilter(0.0, clock=lambda: 0.0)
    assert all(flt.filter(_record("same")) for _ in range(10))
    with pytest.raises(ValueError):
        RateLimitFilter(-1.0)


def test_setup_logging_plain_and_journal(restore_root: None) -> None:
    out = io.StringIO()
    assert setup_logging(LoggingSettings(level="DEBUG", format="plain"), stream=out, env={}) == "plain"
    logging.getLogger("edge_agent.t").debug("hello %s", "plain")
    line = out.getvalue().strip()
    assert line.endswith("DEBUG   edge_agent.t: hello plain")
    assert line[:4].isdigit()  # starts with a timestamp

    out2 = io.StringIO()
    assert setup_logging(LoggingSettings(level="WARNING", format="journal"), stream=out2, env={}) == "journal"
    logging.getLogger("edge_agent.t").info("hidden")
    logging.getLogger("edge_agent.t").warning("shown")
    assert out2.getvalue() == "<4>edge_agent.t: shown\n"
    assert out.getvalue().count("\n") == 1  # the first handler was replaced, not stacked
    marked = [h for h in logging.getLogger().handlers if getattr(h, "_edge_agent_handler", False)]
    assert len(marked) == 1


def test_setup_logging_rate_limits_repeats(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging(LoggingSettings(format="journal", rate_limit_s=60), stream=out, env={})
    log = logging.getLogger("edge_agent.flood")
    for i in range(100):
        log.warning("reconnect attempt %d failed", i)
    assert out.getvalue() == "<4>edge_agent.flood: reconnect attempt 0 failed\n"
