"""A/B comparison in one run: two configurations interleaved in blocks (A, B, A, B, ...) on the same frames,
so drift (thermal, other load on the machine) hits both alike. Reports A/B ratios per stage and percentile.

Ratios are A / B of milliseconds (below 1: A is faster) and A / B of frames per second (above 1: A is faster).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge_agent.bench.speed import StageRunner, StageSamples
from edge_agent.bench.targets import e2e_fps

log = logging.getLogger(__name__)


def run_interleaved(
    a: StageRunner,
    b: StageRunner,
    *,
    warmup: int,
    repeat: int,
    block: int = 10,
    progress: Callable[[int], None] | None = None,
) -> tuple[StageSamples, StageSamples]:
    """``repeat`` recorded frames for each configuration, alternating blocks of ``block`` frames."""
    if block < 1:
        raise ValueError(f"block must be >= 1, got {block}")
    a.run(warmup, 0)
    b.run(warmup, 0)
    done = 0
    while done < repeat:
        n = min(block, repeat - done)
        a.run(0, n)
        b.run(0, n)
        done += n
        if progress:
            progress(done)
    return a.samples, b.samples


def _ratio(x: float, y: float) -> float | None:
    return round(x / y, 4) if y else None


def ratios(summary_a: dict[str, Any], summary_b: dict[str, Any]) -> dict[str, Any]:
    """A/B per stage for p50/p95/p99/mean, for fps_sequential (and fps_pipelined when both have it), and for
    the end-to-end fps (``fps_e2e``: each side's pipelined daemon fps when measured, else its sequential fps --
    the reference pipeline has no daemon form, so its end-to-end rate is its sequential rate)."""
    out: dict[str, Any] = {"stages_ms": {}}
    sa, sb = summary_a["stages_ms"], summary_b["stages_ms"]
    for stage in sa:
        if stage in sb:
            out["stages_ms"][stage] = {
                k: _ratio(sa[stage][k], sb[stage][k]) for k in ("p50", "p95", "p99", "mean") if k in sa[stage]
            }
    out["fps_sequential"] = _ratio(summary_a["fps_sequential"], summary_b["fps_sequential"])
    pa, pb = summary_a.get("pipelined") or {}, summary_b.get("pipelined") or {}
    if pa.get("fps") and pb.get("fps"):
        out["fps_pipelined"] = _ratio(pa["fps"], pb["fps"])
    (fa, kind_a), (fb, kind_b) = e2e_fps(summary_a), e2e_fps(summary_b)
    out["fps_e2e"] = _ratio(fa, fb)
    out["fps_e2e_kinds"] = [kind_a, kind_b]
    return out
