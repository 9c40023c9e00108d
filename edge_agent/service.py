"""The daemon's lifecycle: start, READY, watchdog from the frame flow, signals, SIGHUP reload, exit codes.

``serve`` is what ``edge-agent run`` calls. It owns the main thread: the pipeline's stage threads do the work,
the main thread waits for signals and polls the pipeline's health a few times a second.

- ``READY=1`` is sent only after the pipeline is built (source open, models loaded) and warmed up.
- ``WATCHDOG=1`` is sent at half the watchdog interval *only while frames are being published* or while a live
  source that failed is being reopened with backoff (the capture thread is alive and retrying: a camera unplugged
  for minutes must not turn into a systemd restart loop that gives up); a hung camera read or accelerator stops
  the pings and systemd restarts the service (``WatchdogSec=``).
- ``STATUS=`` carries a one-line state ("running: 24.8 fps, 1 face, backend onnx").
- SIGTERM/SIGINT: ``STOPPING=1``, the pipeline stops (source, backends, socket closed), exit 0.
- SIGHUP: the configuration is loaded again (same file, same command-line overrides); if it is invalid the
  old configuration keeps running and the error is logged. Otherwise the pipeline is rebuilt with it (models
  and source re-opened); if the new pipeline cannot start, the previous configuration is restored.
- A file source that ends: exit 0 with ``once``, else exit SOURCE_ERROR (in daemon mode a stream is expected
  to be endless; set ``source.loop = true`` to replay a file). A stage thread that dies: exit RUNTIME_ERROR.
- Start-up failures exit with the code of their kind (edge_agent.errors.ExitCode).
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from edge_agent.errors import ExitCode, exit_code_for
from edge_agent.logsetup import setup_logging
from edge_agent.sdnotify import Notifier, watchdog_interval
from edge_agent.settings import ConfigError, Settings, load_settings

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP
STOP_TIMEOUT_S = 1.5  # SIGTERM -> exit within 2 s in total
STATUS_INTERVAL_S = 2.0


class HealthLike(Protocol):
    """What the service reads from ``Pipeline.health()``."""

    @property
    def state(self) -> str: ...
    @property
    def frames_published(self) -> int: ...
    @property
    def last_publish_monotonic(self) -> float: ...
    @property
    def ended(self) -> bool: ...
    @property
    def error(self) -> BaseException | None: ...

    @property
    def source_state(self) -> str: ...


class PipelineLike(Protocol):
    """The part of ``edge_agent.pipeline.Pipeline`` the service drives."""

    def warm_up(self) -> None: ...
    def start(self) -> None: ...
    def stop(self, timeout: float = 2.0) -> Any: ...
    def health(self) -> HealthLike: ...


PipelineFactory = Callable[[Settings], PipelineLike]
SettingsLoader = Callable[[], Settings]


class _Exit(Exception):  # control flow: leave the loop with an exit code
    def __init__(self, code: ExitCode) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class WatchdogFeeder:
    """Decides when to send ``WATCHDOG=1``: every ``interval_s / 2`` if frames were published since the last ping.

    ``interval_s`` None (no watchdog configured) never pings.
    """

    interval_s: float | None
    last_ping: float
    frames_at_ping: int = 0

    @property
    def period_s(self) -> float | None:
        return None if self.interval_s is None else self.interval_s / 2

    def restart(self, now: float) -> None:
        """A new pipeline (its frame counter starts at 0); ``now`` counts as a ping (caller sends one)."""
        self.last_ping = now
        self.frames_at_ping = 0

    def poll(self, frames_published: int, now: float, reconnecting: bool = False) -> bool:
        """True when a ping is due: a period has passed and frames were published (or the source is reconnecting)."""
        period = self.period_s
        if period is None or now - self.last_ping < period:
            return False
        if frames_published <= self.frames_at_ping and not reconnecting:
            return False
        self.last_ping = now
        self.frames_at_ping = frames_published
        return True


@dataclass
class RateMeter:
    """Frames per second over the last status interval."""

    t0: float
    frames0: int = 0
    fps: float = 0.0

    def update(self, frames: int, now: float) -> float:
        dt = now - self.t0
        if dt > 0:
            self.fps = max(0, frames - self.frames0) / dt
        self.t0, self.frames0 = now, frames
        return self.fps


def status_line(state: str, fps: float, frames: int, backend: str | None, faces: int | None = None) -> str:
    """One human line for ``STATUS=`` and the log."""
    parts = [f"{fps:.1f} fps"]
    if faces is not None:
        parts.append(f"{faces} face" + ("" if faces == 1 else "s"))
    parts.append(f"{frames} frames")
    if backend:
        parts.append(f"backend {backend}")
    return f"{state}: " + ", ".join(parts)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def infer_overrides(settings: Settings, baseline: Settings) -> dict[str, Any]:
    """Dotted keys whose value in ``settings`` differs from ``baseline`` (the same file and environment, no flags).

    Used to re-apply command-line flags on SIGHUP when the caller did not pass them. A flag that happens to
    equal the file's value is not seen (the file then wins after a reload that changes that key).
    """
    have = _flatten(settings.model_dump())
    base = _flatten(baseline.model_dump())
    return {k: v for k, v in have.items() if base.get(k, object()) != v}


def _backend_name(pipeline: PipelineLike, settings: Settings) -> str:
    """The backend in use: the pipeline's engine says ("onnx"/"hailo"); before that, the configured kind."""
    engine = getattr(pipeline, "engine", None)
    kind = getattr(engine, "backend_kind", None)
    return kind if isinstance(kind, str) else settings.backend.kind


def _faces(pipeline: PipelineLike) -> int | None:
    """Faces in the last published frame, if the pipeline's status snapshot reports it."""
    stats = getattr(pipeline, "stats", None)
    if stats is None:
        return None
    snap = stats()
    value = snap.get("faces") if isinstance(snap, Mapping) else getattr(snap, "faces", None)
    return value if isinstance(value, int) else None


@dataclass
class Service:
    """Runs one pipeline at a time in the main thread's control loop. See the module docstring."""

    settings: Settings
    open_pipeline: PipelineFactory
    reload_settings: SettingsLoader
    once: bool
    notifier: Notifier
    watchdog_s: float | None
    tick_s: float = 0.1
    clock: Callable[[], float] = time.monotonic
    apply_logging: Callable[[Settings], None] | None = None
    _signals: queue.SimpleQueue[int] = field(default_factory=queue.SimpleQueue, init=False)
    _pending_stop: bool = field(default=False, init=False)

    # -- signals -------------------------------------------------------------------------------------------
    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals.put(signum)  # SimpleQueue.put is safe in a signal handler

    def request(self, signum: int) -> None:
        """Queue a signal as if it had been delivered (tests, or a caller's own handler)."""
        self._signals.put(signum)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("serve() must run in the main thread: it installs the SIGTERM/SIGINT/SIGHUP handlers")
        return {int(s): signal.signal(s, self._on_signal) for s in (*STOP_SIGNALS, RELOAD_SIGNAL)}

    def _next_signal(self, timeout: float) -> int | None:
        try:
            return self._signals.get(timeout=timeout)
        except queue.Empty:
            return None

    def _drain_stop(self) -> bool:
        """Consume queued signals; True if a stop was asked (a queued SIGHUP is kept for the loop)."""
        keep: list[int] = []
        while True:
            try:
                s = self._signals.get_nowait()
            except queue.Empty:
                break
            if s in STOP_SIGNALS:
                self._pending_stop = True
            else:
                keep.append(s)
        for s in keep:
            self._signals.put(s)
        return self._pending_stop

    # -- pipeline ------------------------------------------------------------------------------------------
    def _start(self, settings: Settings) -> PipelineLike:
        """Build, warm up and start a pipeline (pinging the watchdog between steps: progress is liveness)."""
        pipeline = self.open_pipeline(settings)
        try:
            self.notifier.watchdog()
            self.notifier.status("starting: warming up models")
            pipeline.warm_up()
            self.notifier.watchdog()
            pipeline.start()
        except BaseException:
            self._stop(pipeline)
            raise
        return pipeline

    def _stop(self, pipeline: PipelineLike) -> None:
        try:
            pipeline.stop(timeout=STOP_TIMEOUT_S)
        except Exception:
            log.exception("error while stopping the pipeline")

    def _reload(self, pipeline: PipelineLike) -> PipelineLike:
        log.info("SIGHUP: reloading the configuration")
        self.notifier.reloading()
        try:
            new = self.reload_settings()
        except ConfigError as exc:
            log.error("reload rejected, still running the previous configuration: %s", exc)
            self.notifier.ready("running (reload rejected: see log)")
            return pipeline
        old = self.settings
        if new == old:
            log.info("configuration unchanged; restarting the pipeline to re-read model files and the source")
        self.notifier.status("reloading: stopping the pipeline")
        self._stop(pipeline)
        if new.logging != old.logging and self.apply_logging is not None:
            self.apply_logging(new)
        try:
            started = self._start(new)
        except Exception as exc:
            log.error("reload failed, restoring the previous configuration: cannot start with the new one: %s", exc)
            if new.logging != old.logging and self.apply_logging is not None:
                self.apply_logging(old)
            try:
                started = self._start(old)
            except Exception as exc2:
                log.error("cannot restore the previous configuration either: %s", exc2)
                self.notifier.stopping(f"stopping: reload failed: {exc2}")
                raise _Exit(exit_code_for(exc2)) from exc2
            self.notifier.ready("running (reload failed: see log)")
            return started
        self.settings = new
        log.info("reloaded: new configuration running")
        self.notifier.ready("running (reloaded)")
        return started

    # -- main loop -----------------------------------------------------------------------------------------
    def run(self) -> int:
        previous = self._install_signals()
        try:
            return int(self._run())
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _run(self) -> ExitCode:
        self.notifier.status("starting: opening the source and loading models")
        try:
            pipeline = self._start(self.settings)
        except Exception as exc:
            code = exit_code_for(exc)
            if code is ExitCode.RUNTIME_ERROR:
                log.exception("cannot start")
            else:
                log.error("cannot start: %s", exc)
            self.notifier.status(f"failed: {exc}")
            return code
        try:
            return self._loop(pipeline)
        except _Exit as ex:
            return ex.code
        except Exception:
            log.exception("internal error in the service loop; stopping")
            self.notifier.stopping("stopping: internal error")
            self._stop(pipeline)
            return ExitCode.RUNTIME_ERROR

    def _loop(self, pipeline: PipelineLike) -> ExitCode:
        now = self.clock()
        feeder = WatchdogFeeder(self.watchdog_s, last_ping=now)
        meter = RateMeter(t0=now)
        next_status = now + STATUS_INTERVAL_S
        if not self._drain_stop():
            backend = _backend_name(pipeline, self.settings)
            log.info("ready: publishing on %s (backend %s, watchdog %s)", self.settings.publisher.endpoint, backend,
                     f"{self.watchdog_s:g} s" if self.watchdog_s else "off")
            self.notifier.ready(f"running: backend {backend}")
        while True:
            sig = None if self._pending_stop else self._next_signal(self.tick_s)
            if self._pending_stop or sig in STOP_SIGNALS:
                name = signal.Signals(sig).name if sig is not None else "stop request"
                log.info("%s: stopping", name)
                self.notifier.stopping(f"stopping: {name}")
                self._stop(pipeline)
                return ExitCode.OK
            if sig == RELOAD_SIGNAL:
                pipeline = self._reload(pipeline)
                now = self.clock()
                feeder.restart(now)
                meter = RateMeter(t0=now)
                continue
            health = pipeline.health()
            if health.error is not None:
                err = health.error
                log.error("a pipeline stage failed: %s", err, exc_info=(type(err), err, err.__traceback__))
                self.notifier.stopping(f"stopping: stage failed: {err}")
                self._stop(pipeline)
                return ExitCode.RUNTIME_ERROR
            if health.ended:
                self.notifier.stopping("stopping: source ended")
                self._stop(pipeline)
                if self.once:
                    log.info("source ended after %d frames: done", health.frames_published)
                    return ExitCode.OK
                log.error("the source ended after %d frames; set source.loop = true to replay a file, or run with "
                          "--once to end with exit 0 when it ends", health.frames_published)
                return ExitCode.SOURCE_ERROR
            now = self.clock()
            if feeder.poll(health.frames_published, now, reconnecting=health.source_state == "reconnecting"):
                self.notifier.watchdog()
            if now >= next_status:
                fps = meter.update(health.frames_published, now)
                line = status_line(health.state, fps, health.frames_published,
                                   _backend_name(pipeline, self.settings), _faces(pipeline))
                self.notifier.status(line)
                log.debug("%s", line)
                next_status = now + STATUS_INTERVAL_S


def serve(
    settings: Settings,
    *,
    config_file: Path | None,
    once: bool,
    overrides: Mapping[str, Any] | None = None,
) -> int:
    """Run the daemon until a signal, the end of a file source (``once``) or a failure; return the exit code.

    ``config_file`` and ``overrides`` (the dotted command-line settings) are what SIGHUP reloads with; when
    ``overrides`` is None they are inferred as the keys where ``settings`` differs from the file + environment.
    """
    setup_logging(settings.logging)
    try:
        notifier = Notifier.from_env()
        watchdog_s = watchdog_interval()
    except ValueError as exc:
        log.error("systemd environment: %s", exc)
        return int(ExitCode.CONFIG_ERROR)
    if overrides is None:
        try:
            flags = infer_overrides(settings, load_settings(config_file))
        except ConfigError as exc:
            log.error("%s", exc)
            return int(ExitCode.CONFIG_ERROR)
    else:
        flags = dict(overrides)
    if flags:
        log.debug("command-line settings kept across reloads: %s", sorted(flags))

    from edge_agent.pipeline import Pipeline  # the heavy imports (onnxruntime, cv2, zmq) only when serving

    def apply_logging(s: Settings) -> None:
        setup_logging(s.logging)

    service = Service(
        settings=settings,
        open_pipeline=Pipeline.from_settings,
        reload_settings=lambda: load_settings(config_file, flags),
        once=once,
        notifier=notifier,
        watchdog_s=watchdog_s,
        apply_logging=apply_logging,
    )
    return service.run()
