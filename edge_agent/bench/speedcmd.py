"""``edge-bench`` without a sub-command: one configuration's stage timing, or ``--compare A B``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.bench.agreement import detection_agreement
from edge_agent.bench.compare import ratios, run_interleaved
from edge_agent.bench.flops import onnx_macs
from edge_agent.bench.identical import identical_detections, identical_text
from edge_agent.bench.inputs import DEFAULT_SOURCE, FrameSet, load_frames
from edge_agent.bench.machine import cpu_model, gemm_peak_gflops, machine_info
from edge_agent.bench.pipelined import run_pipelined
from edge_agent.bench.report import (
    RESULT_SCHEMA,
    now_iso,
    ratio_table,
    results_dir,
    stage_table,
    write_result,
)
from edge_agent.bench.runner import BenchConfig, FrameProcessor, apply_spec, load_processor, parse_size
from edge_agent.bench.speed import Progress, StageRunner
from edge_agent.bench.targets import default_mode_targets, multi_face_targets, targets_text
from edge_agent.manifest import ModelArtifact
from edge_agent.vision.preprocess import prepare

log = logging.getLogger(__name__)


def base_config(args: argparse.Namespace) -> BenchConfig:
    cfg = BenchConfig(backend=args.backend, threads=args.threads,
                      pipeline="reference" if args.reference else "edge",
                      input_size=parse_size(args.input_size) if args.input_size else None)
    if args.detector is not None:
        cfg = dataclasses.replace(cfg, detector=args.detector)
    elif args.backend == "hailo":
        from edge_agent.settings import DetectorSettings

        cfg = dataclasses.replace(cfg, detector=Path(DetectorSettings().hailo_model))
    if args.classifier is not None:
        cfg = dataclasses.replace(cfg, classifier=args.classifier)
    elif args.backend == "hailo":
        from edge_agent.settings import ClassifierSettings

        cfg = dataclasses.replace(cfg, classifier=Path(ClassifierSettings().hailo_model))
    if getattr(args, "config", None):
        cfg = apply_spec(cfg, args.config)
    return cfg


def _detector_shape(proc: FrameProcessor, frame: np.ndarray) -> tuple[int, ...]:
    art = proc.detector_artifact
    if proc.detector_input_wh is None:  # reference: native resolution padded to the size multiple
        m = art.manifest.preprocess.size_multiple
        return (1, 3, math.ceil(frame.shape[0] / m) * m, math.ceil(frame.shape[1] / m) * m)
    tensor, _ = prepare(frame, art.manifest.preprocess, proc.detector_input_wh)
    return tuple(int(v) for v in tensor.shape)


def _input_shapes(art: ModelArtifact, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    return {art.manifest.inputs[0].name: shape}


def efficiency(proc: FrameProcessor, frames: FrameSet, summary: dict[str, Any]) -> dict[str, Any]:
    """fps x GFLOP per frame / the machine's measured fp32 GEMM peak (GFLOP = 2 x GMAC)."""
    det_art, cls_art = proc.detector_artifact, proc.classifier_artifact
    if det_art.manifest.format != "onnx" or cls_art.manifest.format != "onnx":
        return {"skipped": "GFLOP counts need the ONNX form of the models"}
    if plan_counts(proc) is not None:
        return {"skipped": "fast detection mode: the detector work per frame varies (full / ROI / none, see "
                           "detector_plans), so a per-frame GFLOP count would overstate it"}
    det_shape = _detector_shape(proc, frames.frames[0])
    det_macs = onnx_macs(det_art.path, _input_shapes(det_art, det_shape))
    w, h = cls_art.manifest.preprocess.input_size
    cls_shape = (1, 3, h, w) if cls_art.manifest.preprocess.layout == "NCHW" else (1, h, w, 3)
    cls_macs = onnx_macs(cls_art.path, _input_shapes(cls_art, cls_shape))
    if det_macs is None or cls_macs is None:
        return {"skipped": "the onnx package is not installed (needed to count MACs)"}
    gflop = 2.0 * (det_macs + cls_macs * summary["faces_per_frame"]) / 1e9
    peak, busy = gemm_peak_gflops()
    pipe = summary.get("pipelined") or {}
    fps = float(pipe.get("fps") or summary["fps_sequential"])
    achieved = fps * gflop
    return {
        "detector_input_shape": list(det_shape),
        "detector_gmac": round(det_macs / 1e9, 4),
        "classifier_gmac_per_face": round(cls_macs / 1e9, 4),
        "gflop_per_frame": round(gflop, 4),
        "fps": fps,
        "fps_kind": "pipelined" if pipe.get("fps") else "sequential",
        "achieved_gflops": round(achieved, 3),
        "gemm_peak_gflops": round(peak, 2),
        "fraction_of_peak": round(achieved / peak, 5),
        "gemm_peak_measured_under_load": busy,
    }


def _progress(args: argparse.Namespace, label: str, total: int) -> Progress:
    return Progress(label, total, enabled=not args.quiet)


def _header(args: argparse.Namespace, frames: FrameSet) -> dict[str, Any]:
    return {
        "schema": RESULT_SCHEMA,
        "created": now_iso(),
        "machine": machine_info(),
        "note": args.note,
        "source": {"name": frames.source, "frames_decoded": len(frames.frames), "size": list(frames.size)},
        "warmup": args.warmup,
        "repeat": args.repeat,
    }


def model_facts(proc: FrameProcessor) -> dict[str, dict[str, Any]]:
    """model_id, sha256, format and input size of the two artifacts a result was measured with, and the
    classifier's labels (any number, manifest order)."""
    facts: dict[str, dict[str, Any]] = {
        role: {"model_id": a.manifest.model_id, "sha256": a.manifest.sha256, "format": a.manifest.format,
               "input_size": list(a.manifest.preprocess.input_size)}
        for role, a in (("detector", proc.detector_artifact), ("classifier", proc.classifier_artifact))}
    facts["classifier"]["labels"] = list(proc.classifier_artifact.manifest.labels or ())
    return facts


def source_tag(source: str) -> str:
    """Short name of a source for result names: the file/folder name, sample name, synthetic4, camera0."""
    if source.startswith(("sample:", "synthetic:")):
        kind, _, rest = source.partition(":")
        return rest if kind == "sample" else f"synthetic{rest}"
    if source.isdigit():
        return f"camera{source}"
    return Path(source).name or source


def plan_counts(proc: FrameProcessor) -> dict[str, object] | None:
    """Fast mode's per-plan frame counts (full/roi/skip/lost) of a processor, None in full mode."""
    counts = getattr(proc, "plan_counts", None)
    return counts() if callable(counts) else None


def agreement_line(agreement: dict[str, Any]) -> str:
    a, b = agreement["A"], agreement["B"]
    return (f"detections vs B (IoU {agreement['iou']}): A recall {a['recall']} precision {a['precision']} "
            f"({a['matched']}/{a['reference_faces']} faces, {a['frames']} frames); B recall {b['recall']}; "
            f"recall ratio A/B {agreement['recall_ratio']}")


def _device(cfg: BenchConfig) -> str:
    return "hailo8" if cfg.backend == "hailo" else cpu_model()


def run_speed_command(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    if args.repeat < 1 or args.warmup < 0:
        raise ValueError("--repeat must be >= 1 and --warmup >= 0")
    base = base_config(args)
    source = args.source or DEFAULT_SOURCE
    out_dir = args.out_dir or results_dir()
    import onnxruntime as ort

    if args.compare:
        cfg_a, cfg_b = apply_spec(base, args.compare[0]), apply_spec(base, args.compare[1])
        proc_a, proc_b = load_processor(cfg_a), load_processor(cfg_b)
        try:
            frames = load_frames(source, args.max_frames, detect=proc_a.detect)
            ra = StageRunner(proc_a, frames, cfg_a.backend, "A")
            rb = StageRunner(proc_b, frames, cfg_b.backend, "B")
            prog = _progress(args, "compare A/B", args.repeat)
            sa, sb = run_interleaved(ra, rb, warmup=args.warmup, repeat=args.repeat, block=args.block,
                                     progress=prog.update)
            ra.close()
            rb.close()
            summ_a, summ_b = sa.summary(), sb.summary()
            summ_a["models"], summ_b["models"] = model_facts(proc_a), model_facts(proc_b)
            summ_a["detector_plans"], summ_b["detector_plans"] = plan_counts(proc_a), plan_counts(proc_b)
            agreement = detection_agreement(sa.boxes, sb.boxes, iou=0.5)
            identical = identical_detections(frames.frames, proc_a.detect, proc_b.detect)
            summ_a["pipelined"] = run_pipelined(cfg_a, source, args.pipeline_seconds)
            summ_b["pipelined"] = run_pipelined(cfg_b, source, args.pipeline_seconds)
            if not args.no_efficiency:
                summ_a["efficiency"] = efficiency(proc_a, frames, summ_a)
                summ_b["efficiency"] = efficiency(proc_b, frames, summ_b)
        finally:
            proc_a.close()
            proc_b.close()
        targets: dict[str, Any] = {}
        if cfg_b.pipeline == "reference" and cfg_a.pipeline == "edge":
            targets["default_mode"] = default_mode_targets(summ_a, summ_b, identical)
        for key, summ in (("multi_face_a", summ_a), ("multi_face_b", summ_b)):
            if (mf := multi_face_targets(summ)) is not None:
                targets[key] = mf
        ratio = ratios(summ_a, summ_b)
        name = f"compare_{cfg_a.name()}_vs_{cfg_b.name()}@{source_tag(source)}"
        data = {**_header(args, frames), "kind": "compare", "config_name": name,
                "block": args.block, "specs": {"A": args.compare[0], "B": args.compare[1]},
                "configs": {"A": cfg_a.to_dict(), "B": cfg_b.to_dict()},
                "results": {"A": summ_a, "B": summ_b}, "ratio_a_over_b": ratio,
                "detection_agreement": agreement, "identical_detections": identical, "targets": targets}
        path = write_result(data, out_dir, _device(cfg_a), ort.__version__, name)
        text = "\n\n".join([stage_table(summ_a, f"A: {cfg_a.name()}"), stage_table(summ_b, f"B: {cfg_b.name()}"),
                            ratio_table(ratio, cfg_a.name(), cfg_b.name()), agreement_line(agreement),
                            identical_text(identical), *_targets_lines(targets), f"wrote {path}"])
        data["result_file"] = str(path)
        return data, text

    proc = load_processor(base)
    try:
        frames = load_frames(source, args.max_frames, detect=proc.detect)
        runner = StageRunner(proc, frames, base.backend)
        samples = runner.run(args.warmup, args.repeat, _progress(args, base.name(), args.repeat).update)
        runner.close()
        summary = samples.summary()
        summary["models"] = model_facts(proc)
        summary["detector_plans"] = plan_counts(proc)
    finally:
        proc.close()
    summary["pipelined"] = run_pipelined(base, source, args.pipeline_seconds)
    if not args.no_efficiency:
        proc = load_processor(base)  # a fresh load only for shapes; cheap
        try:
            summary["efficiency"] = efficiency(proc, frames, summary)
        finally:
            proc.close()
    if (mf := multi_face_targets(summary)) is not None:
        summary["targets"] = {"multi_face": mf}
    name = f"{base.name()}@{source_tag(source)}"
    data = {**_header(args, frames), "kind": "speed", "config_name": name, "config": base.to_dict(),
            "result": summary}
    path = write_result(data, out_dir, _device(base), ort.__version__, name)
    data["result_file"] = str(path)
    lines = [stage_table(summary, f"{base.name()} on {frames.source} ({frames.size[0]}x{frames.size[1]})"),
             *_targets_lines(summary.get("targets") or {}), f"wrote {path}"]
    return data, "\n".join(lines)


def _targets_lines(targets: dict[str, Any]) -> list[str]:
    """Issue 8's targets as text (targets.py), one block per target group."""
    return [f"targets ({name}):\n{targets_text(t)}" for name, t in targets.items()]
