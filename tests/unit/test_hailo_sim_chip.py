"""The simulated Hailo chip: serialised jobs, busy accounting, overruns (virtual clock: no timing)."""

from __future__ import annotations

import itertools
import threading

import pytest

from edge_agent.bench.hailo_sim.chip import BusyMeter, SimChip


class VirtualClock:
    """time.monotonic/time.sleep stand-ins: sleeping advances the clock instantly."""

    def __init__(self) -> None:
        self.t = 100.0
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self.t

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.t += seconds

    def advance(self, seconds: float) -> None:
        self.sleep(seconds)


def _run_jobs(chip: SimChip, jobs: list[tuple[str, float, float]], clock: VirtualClock) -> list[BaseException | None]:
    """Submit (network, chip seconds, work seconds) jobs; wait until all are done."""
    results: list[BaseException | None] = []
    done = threading.Event()

    def finished(err: BaseException | None) -> None:
        results.append(err)
        if len(results) == len(jobs):
            done.set()

    for net, seconds, work_s in jobs:
        chip.submit(net, seconds, lambda w=work_s: clock.advance(w), finished)
    assert done.wait(10.0)
    return results


def test_busy_meter_clips_to_the_window() -> None:
    m = BusyMeter()
    m.add(0.0, 1.0)
    m.add(2.0, 3.0)
    assert m.busy(0.0, 4.0) == pytest.approx(2.0)
    assert m.busy(0.5, 2.5) == pytest.approx(1.0)
    assert m.share(0.0, 4.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        m.add(2.0, 1.0)
    with pytest.raises(ValueError):
        m.share(1.0, 1.0)


def test_jobs_are_serialised_and_accounted() -> None:
    clock = VirtualClock()
    chip = SimChip(clock=clock.now, sleep=clock.sleep)
    try:
        t0 = clock.now()
        errors = _run_jobs(chip, [("det", 0.003, 0.0), ("cls", 0.001, 0.0), ("det", 0.003, 0.0)], clock)
        t1 = clock.now()
        assert errors == [None, None, None]
        recs = chip.jobs_between(t0, t1 + 1)
        assert [r.network for r in recs] == ["det", "cls", "det"]
        for a, b in itertools.pairwise(recs):  # one chip: a job starts after the previous one ended
            assert b.start >= a.end
        assert [round(r.end - r.start, 9) for r in recs] == [0.003, 0.001, 0.003]
        assert chip.meter.busy(t0, t1) == pytest.approx(0.007)
        clock.advance(0.007)  # as long idle as busy
        assert chip.busy_share(t0, clock.now()) == pytest.approx(0.5)
        assert not any(r.overrun for r in recs) and all(r.delay == 0.0 for r in recs)
    finally:
        chip.close()


def test_work_longer_than_the_chip_time_is_an_overrun() -> None:
    clock = VirtualClock()
    chip = SimChip(clock=clock.now, sleep=clock.sleep)
    try:
        t0 = clock.now()
        _run_jobs(chip, [("det", 0.001, 0.004)], clock)
        (rec,) = chip.jobs_between(t0, clock.now() + 1)
        assert rec.overrun and rec.end - rec.start == pytest.approx(0.004)  # completes late ...
        assert chip.meter.busy(t0, clock.now()) == pytest.approx(0.001)  # ... but only the chip time is busy
        assert rec.delay == pytest.approx(0.003)
    finally:
        chip.close()


def test_work_errors_reach_the_owner() -> None:
    clock = VirtualClock()
    chip = SimChip(clock=clock.now, sleep=clock.sleep)
    got: list[BaseException | None] = []
    done = threading.Event()

    def boom() -> None:
        raise RuntimeError("no outputs")

    def finished(err: BaseException | None) -> None:
        got.append(err)
        done.set()

    try:
        chip.submit("det", 0.001, boom, finished)
        assert done.wait(10.0)
        assert isinstance(got[0], RuntimeError) and "no outputs" in str(got[0])
        with pytest.raises(ValueError):
            chip.submit("det", -1.0, boom, finished)
    finally:
        chip.close()
