"""The CPU performance targets of issue 8, checked against ``edge-bench`` summaries (pure functions).

1. default mode (``--compare A B``, A = the daemon's pipeline, B = the reference pipeline):
   * ``fps_ratio``: A's end-to-end fps (the pipelined daemon's, else sequential) / B's fps (the reference has no
     daemon form: its sequential fps *is* its end-to-end rate) >= 2, with identical detections;
   * ``latency_tail``: A's capture->publish p99 / p50 (pipelined daemon, file at native pace) <= 2;
   * ``overhead``: A's end-to-end frame time (1 / fps) / the sum of the model inference times per frame (mean
     detector + mean classifier call, measured in the stage run) <= 1.15;
   * ``latency_overhead``: the same question per frame rather than per second, immune to the overlap hiding
     work: A's capture->publish p50 at native pace / (detector p50 + classifier p50 measured by the daemon in
     that same run) <= 1.15 (everything but the two model calls -- queue wait, preprocess, decode+NMS, crops,
     message, send -- costs at most 15 %).
3. multi-face (a 5-face photo): classifier cost per face (p50 of classifier call / faces) <= 1.5 ms and
   end-to-end fps >= 40.
4. efficiency: fps x GFLOP per frame / the measured GEMM peak (reported, no threshold).
5. memory: the daemon's RSS with both models loaded <= 200 MB (benchmarks/soak.py; see ``memory_target``).

Every check is ``{"value", "target", "op", "met"}``; ``met`` is None when the figure is missing.
"""

from __future__ import annotations

from typing import Any

FPS_RATIO_MIN = 2.0
LATENCY_TAIL_MAX = 2.0
OVERHEAD_MAX = 1.15
PER_FACE_MS_MAX = 1.5
MULTI_FACE_FPS_MIN = 40.0
MULTI_FACE_MIN_FACES = 5.0
RSS_MAX_MB = 200.0


def _check(value: float | None, target: float, op: str) -> dict[str, Any]:
    met: bool | None = None
    if value is not None:
        met = value >= target if op == ">=" else value <= target
    return {"value": None if value is None else round(value, 4), "target": target, "op": op, "met": met}


def e2e_fps(summary: dict[str, Any]) -> tuple[float, str]:
    """The end-to-end frame rate of a summary: the pipelined daemon's when measured, else the sequential one."""
    pipe = summary.get("pipelined") or {}
    if pipe.get("fps"):
        return float(pipe["fps"]), "pipelined"
    return float(summary["fps_sequential"]), "sequential"


def _stage_mean_ms(summary: dict[str, Any], stage: str) -> float | None:
    st = summary.get("stages_ms", {}).get(stage)
    return None if st is None else float(st["mean"])


def inference_ms_per_frame(summary: dict[str, Any]) -> float | None:
    """Mean detector call + mean classifier time per frame (frames without faces count 0 for the classifier)."""
    det = _stage_mean_ms(summary, "detector")
    cls = _stage_mean_ms(summary, "classifier")
    if det is None:
        return None
    return det + (cls or 0.0)


def overhead_ratio(summary: dict[str, Any]) -> float | None:
    """End-to-end frame time / model inference time per frame (1.0: everything but the models is free)."""
    fps, _ = e2e_fps(summary)
    inf = inference_ms_per_frame(summary)
    if not fps or not inf:
        return None
    return (1000.0 / fps) / inf


def latency_tail(summary: dict[str, Any]) -> float | None:
    """capture->publish p99 / p50 of the pipelined daemon, or None without a pipelined run."""
    lat = (summary.get("pipelined") or {}).get("latency_ms") or {}
    if not lat.get("p50") or lat.get("p99") is None:
        return None
    return float(lat["p99"]) / float(lat["p50"])


def latency_overhead(summary: dict[str, Any]) -> float | None:
    """capture->publish p50 (pipelined daemon, native pace) / the daemon's detector p50 + classifier p50."""
    pipe = summary.get("pipelined") or {}
    lat = (pipe.get("latency_ms") or {}).get("p50")
    stages = ((pipe.get("latency_run") or {}).get("daemon_stats") or {}).get("latency_ms") or {}
    det = (stages.get("detector") or {}).get("p50")
    cls = (stages.get("classifier") or {}).get("p50") or 0.0
    if not lat or not det:
        return None
    return float(lat) / (float(det) + float(cls))


def default_mode_targets(a: dict[str, Any], b: dict[str, Any], agreement: dict[str, Any] | None) -> dict[str, Any]:
    """Target 1 for A (the daemon's pipeline) against B (the reference pipeline)."""
    fa, kind_a = e2e_fps(a)
    fb, kind_b = e2e_fps(b)
    return {
        "fps_a": fa, "fps_a_kind": kind_a, "fps_b": fb, "fps_b_kind": kind_b,
        "fps_ratio": _check(fa / fb if fb else None, FPS_RATIO_MIN, ">="),
        "identical_detections": None if agreement is None else bool(agreement["identical"]),
        "latency_tail": _check(latency_tail(a), LATENCY_TAIL_MAX, "<="),
        "overhead": _check(overhead_ratio(a), OVERHEAD_MAX, "<="),
        "latency_overhead": _check(latency_overhead(a), OVERHEAD_MAX, "<="),
    }


def multi_face_targets(summary: dict[str, Any]) -> dict[str, Any] | None:
    """Target 3, for a run with at least 5 faces per frame (None otherwise)."""
    if float(summary.get("faces_per_frame") or 0.0) < MULTI_FACE_MIN_FACES:
        return None
    per_face = summary.get("stages_ms", {}).get("classifier_per_face", {}).get("p50")
    fps, kind = e2e_fps(summary)
    return {
        "faces_per_frame": summary["faces_per_frame"],
        "classifier_ms_per_face": _check(None if per_face is None else float(per_face), PER_FACE_MS_MAX, "<="),
        "fps": _check(fps, MULTI_FACE_FPS_MIN, ">="),
        "fps_kind": kind,
    }


def memory_target(rss_mb: float | None) -> dict[str, Any]:
    """Target 5: the daemon's resident memory with both models loaded."""
    return _check(rss_mb, RSS_MAX_MB, "<=")


def targets_text(t: dict[str, Any]) -> str:
    """Human lines for the checks in ``t`` (nested dicts with value/target/op/met)."""
    lines = []
    for name, c in t.items():
        if isinstance(c, dict) and "met" in c:
            mark = "n/a" if c["met"] is None else ("MET" if c["met"] else "NOT MET")
            lines.append(f"  {name}: {c['value']} (target {c['op']} {c['target']}) {mark}")
    return "\n".join(lines)
