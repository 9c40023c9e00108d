"""Service orchestration (signals, READY/WATCHDOG/STOPPING, reload, exit codes) with an in-test pipeline.

The stand-in implements the agreed Pipeline API (from_settings/warm_up/start/stop/health); the real daemon is
exercised end to end in tests/integration/test_service_lifecycle.py.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge_agent.errors import ExitCode, SourceError
from edge_agent.manifest import ManifestError
from edge_agent.sdnotify import Notifier
from edge_agent.service import (
    RateMeter,
    Service,
    WatchdogFeeder,
    infer_overrides,
    status_line,
)
from edge_agent.settings import ConfigError, Settings, load_settings
from tests.support.notify import NotifyListener


@dataclass(frozen=True)
class Health:
    state: str
    frames_published: int
    last_publish_monotonic: float
    ended: bool
    error: BaseException | None
    source_state: str = "running"


class StandInPipeline:
    """Publishes a frame every ``period`` seconds from a thread after start(); can end, fail or stall."""

    def __init__(self, settings: Settings, period: float = 0.01, end_after: int | None = None,
                 fail_after: int | None = None, stall_after: int | None = None) -> None:
        self.settings = settings
        self.period, self.end_after, self.fail_after, self.stall_after = period, end_after, fail_after, stall_after
        self.calls: list[str] = []
        self.frames = 0
        self.error: BaseException | None = None
        self.ended = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def warm_up(self) -> None:
        self.calls.append("warm_up")

    def start(self) -> None:
        self.calls.append("start")
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.wait(self.period):
            if self.stall_after is not None and self.frames >= self.stall_after:
                continue
            self.frames += 1
            if self.end_after is not None and self.frames >= self.end_after:
                self.ended = True
                return
            if self.fail_after is not None and self.frames >= self.fail_after:
                self.error = RuntimeError("detector stage: device timeout")
                return

    def stop(self, timeout: float = 2.0) -> None:
        self.calls.append("stop")
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def health(self) -> Health:
        state = "ended" if self.ended else ("failed" if self.error else "running")
        return Health(state, self.frames, time.monotonic(), self.ended, self.error)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[NotifyListener]:
    lst = NotifyListener(tmp_path / "notify.sock")
    yield lst
    lst.close()


def _send_later(delay: float, signum: int) -> threading.Timer:
    t = threading.Timer(delay, os.kill, (os.getpid(), signum))
    t.start()
    return t


def _service(listener: NotifyListener, made: list[StandInPipeline], watchdog_s: float | None = 0.2, once: bool = False,
             reload_to: Settings | Exception | None = None, **kw: object) -> Service:
    def factory(s: Settings) -> StandInPipeline:
        p = StandInPipeline(s, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    def reload_settings() -> Settings:
        if isinstance(reload_to, Exception):
            raise reload_to
        return reload_to if reload_to is not None else Settings()

    return Service(settings=Settings(), open_pipeline=factory, reload_settings=reload_settings, once=once,
                   notifier=Notifier(listener.name), watchdog_s=watchdog_s, tick_s=0.02)


def test_ready_watchdog_and_clean_stop_on_sigterm(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    svc = _service(listener, made)
    _send_later(0.8, signal.SIGTERM)
    t0 = time.monotonic()
    assert svc.run() == ExitCode.OK
    assert time.monotonic() - t0 < 2.0
    msgs = listener.texts(settle_s=0.1)
    ready = next(i for i, m in enumerate(msgs) if m.startswith("READY=1"))
    assert made[0].calls == ["warm_up", "start", "stop"]
    after_ready = msgs[ready + 1:]
    assert after_ready.count("WATCHDOG=1") >= 4  # every 0.1 s while frames flow
    assert any(m.startswith("STOPPING=1") for m in after_ready)
    assert msgs.index(next(m for m in msgs if m.startswith("STOPPING=1"))) > ready
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored


def test_sigint_also_stops(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    svc = _service(listener, made)
    _send_later(0.3, signal.SIGINT)
    assert svc.run() == ExitCode.OK
    assert made[0].calls[-1] == "stop"


def test_no_watchdog_pings_when_frames_stall(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    svc = _service(listener, made, stall_after=3)
    _send_later(1.0, signal.SIGTERM)
    assert svc.run() == ExitCode.OK
    msgs = listener.texts(settle_s=0.1)
    ready = next(i for i, m in enumerate(msgs) if m.startswith("READY=1"))
    assert msgs[ready + 1:].count("WATCHDOG=1") <= 1  # at most one ping for the first 3 frames, then silence


def test_no_watchdog_pings_without_watchdog(listener: NotifyListener) -> None:
    svc = _service(listener, [], watchdog_s=None)
    _send_later(0.4, signal.SIGTERM)
    assert svc.run() == ExitCode.OK
    msgs = listener.texts(settle_s=0.1)
    ready = next(i for i, m in enumerate(msgs) if m.startswith("READY=1"))
    assert "WATCHDOG=1" not in msgs[ready + 1:]


def test_stage_error_exits_runtime_error_after_clean_stop(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    svc = _service(listener, made, fail_after=5)
    assert svc.run() == ExitCode.RUNTIME_ERROR
    assert made[0].calls[-1] == "stop"
    assert any(m.startswith("STOPPING=1") and "device timeout" in m for m in listener.texts(settle_s=0.1))


def test_source_end_with_once_is_success(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    assert _service(listener, made, once=True, end_after=5).run() == ExitCode.OK
    assert made[0].calls[-1] == "stop"


def test_source_end_without_once_is_a_source_error(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    assert _service(listener, made, once=False, end_after=5).run() == ExitCode.SOURCE_ERROR
    assert made[0].calls[-1] == "stop"


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (SourceError("camera /dev/video9: cannot open"), ExitCode.SOURCE_ERROR),
        (ManifestError("models/x: sha256 mismatch"), ExitCode.MODEL_ERROR),
        (ConfigError("detector.score_threshold: bad"), ExitCode.CONFIG_ERROR),
        (RuntimeError("bug"), ExitCode.RUNTIME_ERROR),
    ],
)
def test_startup_failure_exit_codes(listener: NotifyListener, exc: Exception, code: ExitCode) -> None:
    def factory(s: Settings) -> StandInPipeline:
        raise exc

    svc = Service(settings=Settings(), open_pipeline=factory, reload_settings=Settings, once=False,
                  notifier=Notifier(listener.name), watchdog_s=None)
    assert svc.run() == code
    assert not any(m.startswith("READY=1") for m in listener.texts(settle_s=0.1))


def test_warm_up_failure_stops_what_was_opened(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []

    class Failing(StandInPipeline):
        def warm_up(self) -> None:
            self.calls.append("warm_up")
            raise ManifestError("classifier output shape differs from manifest")

    def factory(s: Settings) -> StandInPipeline:
        made.append(Failing(s))
        return made[-1]

    svc = Service(settings=Settings(), open_pipeline=factory, reload_settings=Settings, once=False,
                  notifier=Notifier(listener.name), watchdog_s=None)
    assert svc.run() == ExitCode.MODEL_ERROR
    assert made[0].calls == ["warm_up", "stop"]


def test_sighup_rebuilds_with_new_settings(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    new = Settings()
    new.detector.score_threshold = 0.99
    svc = _service(listener, made, reload_to=new)
    _send_later(0.3, signal.SIGHUP)
    _send_later(0.9, signal.SIGTERM)
    assert svc.run() == ExitCode.OK
    assert len(made) == 2
    assert made[0].calls == ["warm_up", "start", "stop"]
    assert made[1].settings.detector.score_threshold == 0.99
    assert made[1].calls == ["warm_up", "start", "stop"]
    assert svc.settings.detector.score_threshold == 0.99
    msgs = listener.texts(settle_s=0.1)
    reloading = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1\nMONOTONIC_USEC="))
    assert any(m.startswith("READY=1") for m in msgs[reloading + 1:])
    assert msgs[reloading + 1:].count("WATCHDOG=1") >= 2  # the new pipeline's frames feed the watchdog


def test_sighup_with_invalid_config_keeps_running(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    svc = _service(listener, made, reload_to=ConfigError("detector.nms_iou: must be > 0"))
    _send_later(0.3, signal.SIGHUP)
    _send_later(0.7, signal.SIGTERM)
    assert svc.run() == ExitCode.OK
    assert len(made) == 1 and made[0].calls == ["warm_up", "start", "stop"]
    msgs = listener.texts(settle_s=0.1)
    reloading = next(i for i, m in enumerate(msgs) if m.startswith("RELOADING=1"))
    assert any(m.startswith("READY=1") and "rejected" in m for m in msgs[reloading:])


def test_sighup_restores_old_config_when_new_one_cannot_start(listener: NotifyListener) -> None:
    made: list[StandInPipeline] = []
    new = Settings()
    new.source.uri = "/dev/video9"

    def factory(s: Settings) -> StandInPipeline:
        if s.source.uri == "/dev/video9":
            raise SourceError("/dev/video9: no such device")
        made.append(StandInPipeline(s))
        return made[-1]

    svc = Service(settings=Settings(), open_pipeline=factory, reload_settings=lambda: new, once=False,
                  notifier=Notifier(listener.name), watchdog_s=0.2, tick_s=0.02)
    _send_later(0.3, signal.SIGHUP)
    _send_later(0.9, signal.SIGTERM)
    assert svc.run() == ExitCode.OK
    assert len(made) == 2 and all(p.settings.source.uri == "0" for p in made)
    assert made[1].frames > 0
    assert svc.settings.source.uri == "0"


def test_sighup_exits_when_neither_config_starts(listener: NotifyListener) -> None:
    attempts: list[str] = []

    def factory(s: Settings) -> StandInPipeline:
        attempts.append(s.source.uri)
        if len(attempts) > 1:
            raise SourceError("camera unplugged")
        return StandInPipeline(s)

    svc = Service(settings=Settings(), open_pipeline=factory, reload_settings=Settings, once=False,
                  notifier=Notifier(listener.name), watchdog_s=None, tick_s=0.02)
    _send_later(0.3, signal.SIGHUP)
    assert svc.run() == ExitCode.SOURCE_ERROR
    assert len(attempts) == 3


def test_stop_during_startup_never_sends_ready(listener: NotifyListener) -> None:
    def factory(s: Settings) -> StandInPipeline:
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while models load
        return StandInPipeline(s)

    svc = Service(settings=Settings(), open_pipeline=factory, reload_settings=Settings, once=False,
                  notifier=Notifier(listener.name), watchdog_s=None)
    assert svc.run() == ExitCode.OK
    msgs = listener.texts(settle_s=0.1)
    assert not any(m.startswith("READY=1") for m in msgs)
    assert any(m.startswith("STOPPING=1") for m in msgs)


def test_watchdog_feeder() -> None:
    f = WatchdogFeeder(10.0, last_ping=0.0)
    assert f.period_s == 5.0
    assert not f.poll(100, 4.9)  # too soon
    assert f.poll(100, 5.0)
    assert not f.poll(100, 20.0)  # no new frames: no ping, however long
    assert f.poll(101, 20.1)
    f.restart(30.0)
    assert not f.poll(0, 40.0)
    assert f.poll(1, 40.0)
    assert not WatchdogFeeder(None, last_ping=0.0).poll(10, 100.0)


def test_rate_meter_and_status_line() -> None:
    m = RateMeter(t0=0.0)
    assert m.update(50, 2.0) == 25.0
    assert m.update(50, 4.0) == 0.0
    assert status_line("running", 24.84, 1200, "onnx", 1) == "running: 24.8 fps, 1 face, 1200 frames, backend onnx"
    assert status_line("running", 3.0, 9, "hailo", 2) == "running: 3.0 fps, 2 faces, 9 frames, backend hailo"
    assert status_line("running", 0.0, 0, None) == "running: 0.0 fps, 0 frames"


def test_infer_overrides_finds_flag_values(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text('[detector]\nscore_threshold = 0.5\n[source]\nuri = "/dev/video0"\n')
    flags = {"source.uri": "sample:single_face.mp4", "source.loop": True, "publisher.endpoint": "tcp://127.0.0.1:7000"}
    effective = load_settings(cfg, flags)
    inferred = infer_overrides(effective, load_settings(cfg))
    assert inferred == flags
    # re-applied on reload: the file's later change to another key takes effect, the flags still win
    cfg.write_text('[detector]\nscore_threshold = 0.99\n[source]\nuri = "/dev/video1"\n')
    reloaded = load_settings(cfg, inferred)
    assert reloaded.detector.score_threshold == 0.99
    assert reloaded.source.uri == "sample:single_face.mp4"
