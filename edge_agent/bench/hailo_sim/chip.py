"""One simulated Hailo chip: inferences run one at a time, each occupying the chip for a configured time.

:class:`SimChip` has one worker thread and one FIFO of jobs (the device runs one network at a time; HailoRT's
scheduler hands it jobs from both networks). A job completes ``max(configured time, the time the simulator
needs to produce its outputs)`` after it started; a job whose output work took longer than its configured time
is counted as an *overrun* (the simulator, not the pipeline, held it up). The :class:`BusyMeter` records the
*configured* time of every job (what the real chip would be busy for): time the simulator adds (overruns, sleep
overshoot) delays completions and counts as idle, so the busy share errs low, never high.
:meth:`SimChip.busy_share` is busy time / wall time over a window. Clock and sleep are injectable so the
accounting is testable without real time.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass
class BusyMeter:
    """Occupied intervals of the chip (seconds on the chip's clock)."""

    intervals: list[tuple[float, float]] = field(default_factory=list)

    def add(self, start: float, end: float) -> None:
        if end < start:
            raise ValueError(f"interval ends before it starts: {start} > {end}")
        self.intervals.append((start, end))

    def busy(self, t0: float, t1: float) -> float:
        """Seconds of [t0, t1] covered by intervals (they never overlap: one chip)."""
        return sum(max(0.0, min(e, t1) - max(s, t0)) for s, e in self.intervals)

    def share(self, t0: float, t1: float) -> float:
        if t1 <= t0:
            raise ValueError(f"empty window [{t0}, {t1}]")
        return self.busy(t0, t1) / (t1 - t0)


@dataclass(frozen=True)
class JobRecord:
    network: str
    start: float
    end: float
    seconds: float  # the configured chip time
    overrun: bool

    @property
    def delay(self) -> float:
        """Seconds the simulator held the job beyond its chip time (0 without an overrun)."""
        return max(0.0, (self.end - self.start) - self.seconds) if self.overrun else 0.0


@dataclass
class _Job:
    network: str
    seconds: float
    work: Callable[[], None]
    done: Callable[[BaseException | None], None]


_STOP = object()


class SimChip:
    """A single serialised accelerator with busy accounting."""

    def __init__(self, clock: Clock = time.monotonic, sleep: Sleep = time.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self._jobs: queue.Queue[_Job | object] = queue.Queue()
        self._lock = threading.Lock()
        self.meter = BusyMeter()
        self.records: list[JobRecord] = []
        self._thread = threading.Thread(target=self._run, name="sim-chip", daemon=True)
        self._thread.start()

    def now(self) -> float:
        return self._clock()

    def submit(self, network: str, seconds: float, work: Callable[[], None],
               done: Callable[[BaseException | None], None]) -> None:
        """Queue one inference: ``work`` produces its outputs, then the chip stays occupied until ``seconds``
        after the job started; ``done(exception or None)`` is called from the chip thread when it ends."""
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self._jobs.put(_Job(network, seconds, work, done))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            assert isinstance(job, _Job)
            start = self._clock()
            error: BaseException | None = None
            try:
                job.work()
            except Exception as exc:  # reported to the job's owner through done()
                error = exc
            worked = self._clock() - start
            if worked < job.seconds:
                self._sleep(job.seconds - worked)
            end = self._clock()
            with self._lock:
                self.meter.add(start, start + job.seconds)
                self.records.append(JobRecord(job.network, start, end, job.seconds, overrun=worked > job.seconds))
            job.done(error)

    def busy_share(self, t0: float, t1: float) -> float:
        with self._lock:
            return self.meter.share(t0, t1)

    def jobs_between(self, t0: float, t1: float) -> list[JobRecord]:
        with self._lock:
            return [r for r in self.records if t0 <= r.start < t1]

    def close(self) -> None:
        self._jobs.put(_STOP)
        self._thread.join(timeout=5.0)
