"""Static INT8 QDQ copy of a detector artifact (onnxruntime.quantization), measured against its fp32 original.

    .venv/bin/python -m build.export.quantize --model models/detector/retinaface-mnet025 --out DIR --calib 64

Calibration: ``--calib`` real frames from the *training* registry media of ``build.distill_detector``
(never the held-out sources), each prepared exactly as the daemon does (``edge_agent.vision.preprocess.prepare``,
letterbox at ``--calib-size``, default 640x384). Weights per channel int8, activations uint8, MinMax calibration,
QDQ format. ``DeformConv`` nodes (no int8 kernel in onnxruntime) are excluded and stay float.

Measured (written to MODEL_CARD.md, manifest metrics and ``quantize_report.json``): detector p50 ms of fp32 vs int8
interleaved on the same held-out frames (1 intra-op thread, the daemon's FaceDetector, ``detector`` stage only),
and recall / precision of the int8 detections against the fp32 detections at IoU 0.5 on the held-out frames
(multi_face.jpg, faceapi_sample1..6.jpg, WolfgangLanger_Pexels.mp4 every 8th frame).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from build.distill_detector import HOLDOUT_SOURCES, TRAIN_SOURCES, SourceFrame, load_frames, match_counts
from build.export.common import file_facts, git_head
from edge_agent.backends.onnx import OnnxBackend
from edge_agent.detector import FaceDetector
from edge_agent.manifest import Manifest, ModelArtifact, load_artifact
from edge_agent.vision.preprocess import prepare

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
UNQUANTISED_OPS = ("DeformConv",)


@dataclass(frozen=True)
class QuantSettings:
    calib_frames: int
    calib_wh: tuple[int, int]
    per_channel: bool = True
    weight_type: str = "QInt8"
    activation_type: str = "QUInt8"
    method: str = "MinMax"
    fmt: str = "QDQ"


class FrameReader(CalibrationDataReader):  # type: ignore[misc]
    """Feeds the daemon's own preprocessing of real frames to the calibrator."""

    def __init__(self, art: ModelArtifact, frames: Sequence[SourceFrame], wh: tuple[int, int]) -> None:
        m = art.manifest
        self._name = m.inputs[0].name
        self._it: Iterator[dict[str, np.ndarray]] = iter(
            [{self._name: prepare(f.image, m.preprocess, wh)[0]} for f in frames])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def calibration_frames(n: int) -> list[SourceFrame]:
    """``n`` frames spread evenly over the detector's training media (never the held-out sources)."""
    frames = load_frames(TRAIN_SOURCES)
    if n < 1:
        raise ValueError(f"--calib must be >= 1, got {n}")
    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    return [frames[i] for i in idx]


def excluded_nodes(model: onnx.ModelProto) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in UNQUANTISED_OPS]


def quantize_artifact(src: Path, out: Path, frames: Sequence[SourceFrame], settings: QuantSettings,
                      recipe: str) -> ModelArtifact:
    """Write ``out/<id>-int8.onnx`` and its manifest; return the loaded (verified) int8 artifact."""
    art = load_artifact(src)
    m = art.manifest
    model_id = f"{m.model_id}-int8"
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / f"{model_id}.onnx"
    exclude = excluded_nodes(onnx.load(str(art.path)))
    if exclude:
        log.info("not quantised (no int8 kernel): %s", exclude)
    quantize_static(
        str(art.path), str(onnx_path), FrameReader(art, frames, settings.calib_wh),
        quant_format=QuantFormat.QDQ, per_channel=settings.per_channel, weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8, calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
    )
    sha, size = file_facts(onnx_path)
    metrics: dict[str, float | int | str] = {
        k: v for k, v in m.metrics.items() if k in {"params", "macs_640x640", "macs_convention"}}
    metrics.update({"quant_format": settings.fmt, "quant_weights": f"{settings.weight_type} per-channel",
                    "quant_activations": settings.activation_type, "quant_calibration": settings.method,
                    "quant_calib_frames": len(frames),
                    "quant_calib_size": f"{settings.calib_wh[0]}x{settings.calib_wh[1]}",
                    "quant_excluded_nodes": ",".join(exclude) or "none"})
    prov = m.provenance.model_copy(update={
        "source": f"static INT8 QDQ of {m.model_id} (sha256 {m.sha256}); {m.provenance.source}",
        "recipe": recipe, "created": date.today().isoformat(), "git_commit": git_head(ROOT),
        "data": f"calibration: {len(frames)} frames of {', '.join(sorted(TRAIN_SOURCES))}"})
    qm = m.model_copy(update={"model_id": model_id, "file": onnx_path.name, "sha256": sha, "size_bytes": size,
                              "architecture": f"{m.architecture}; INT8 QDQ (onnxruntime.quantization)",
                              "provenance": prov, "metrics": metrics})
    Manifest.model_validate(qm.model_dump())
    (out / "manifest.json").write_text(qm.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return load_artifact(out)


def _detector(art: ModelArtifact) -> FaceDetector:
    return FaceDetector(art, OnnxBackend(art.path, intra_op_threads=1))


def compare(fp32: ModelArtifact, int8: ModelArtifact, frames: Sequence[SourceFrame]) -> dict[str, Any]:
    """Interleaved timing (detector stage, 1 thread) and int8-vs-fp32 agreement at IoU 0.5 per source."""
    a, b = _detector(fp32), _detector(int8)
    a.detect(frames[0].image)
    b.detect(frames[0].image)  # warm-up
    t32: list[float] = []
    t8: list[float] = []
    per: dict[str, dict[str, int]] = {}
    for f in frames:
        d32, tm32 = a.detect_timed(f.image)
        d8, tm8 = b.detect_timed(f.image)
        t32.append(tm32["detector"])
        t8.append(tm8["detector"])
        m = match_counts(torch.from_numpy(d8.boxes), torch.from_numpy(d32.boxes), 0.5)
        s = per.setdefault(f.source, {"frames": 0, "fp32": 0, "int8": 0, "matched": 0})
        s["frames"] += 1
        s["fp32"] += len(d32)
        s["int8"] += len(d8)
        s["matched"] += m
    tot = {k: sum(v[k] for v in per.values()) for k in ("frames", "fp32", "int8", "matched")}
    return {
        "p50_ms_fp32": round(1e3 * float(np.median(t32)), 2), "p50_ms_int8": round(1e3 * float(np.median(t8)), 2),
        "timed_frames": len(frames), "per_source": per, "all": tot,
        "recall": tot["matched"] / tot["fp32"] if tot["fp32"] else float("nan"),
        "precision": tot["matched"] / tot["int8"] if tot["int8"] else float("nan"),
    }


def card(int8: ModelArtifact, fp32: ModelArtifact, settings: QuantSettings, cmp: dict[str, Any]) -> str:
    m = int8.manifest
    rows = "\n".join(f"| {s} | {v['frames']} | {v['fp32']} | {v['int8']} | {v['matched']} |"
                     for s, v in cmp["per_source"].items())
    excl = m.metrics.get("quant_excluded_nodes", "none")
    excl_text = "none" if excl == "none" else (
        f"{excl} (DeformConv has no int8 kernel; those nodes stay float with dequantised inputs)")
    return f"""# {m.model_id}

Static INT8 QDQ copy of `{fp32.manifest.model_id}` made by `{m.provenance.recipe}`
(onnxruntime {onnxruntime.__version__}). Same inputs, outputs, preprocessing and anchors as the fp32 model;
the daemon loads it exactly like the original.

- Quantisation: {settings.fmt}, weights {settings.weight_type} per channel, activations {settings.activation_type},
  {settings.method} calibration on {settings.calib_frames} real frames of the detector's training media
  (never the held-out sources), each letterboxed by the daemon's `prepare` at
  {settings.calib_wh[0]}x{settings.calib_wh[1]}.
- Not quantised: {excl_text}.

## Measured against the fp32 model

Both through the daemon's FaceDetector (score 0.6, NMS 0.4, default input size), 1 intra-op thread, interleaved
frame by frame on the same {cmp["timed_frames"]} held-out frames; time = the `detector` stage (onnxruntime run)
only, on a shared 2-core CPU:

| model | detector p50 (ms) |
|---|---:|
| fp32 | {cmp["p50_ms_fp32"]} |
| int8 | {cmp["p50_ms_int8"]} |

Agreement of the int8 detections with the fp32 detections (IoU 0.5): recall **{cmp["recall"]:.4f}**, precision
**{cmp["precision"]:.4f}**.

| source | frames | fp32 faces | int8 faces | matched |
|:-|-:|-:|-:|-:|
{rows}

These are agreement figures with the fp32 model, not accuracy against labelled faces.
"""


def parse_wh(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit()):
        raise argparse.ArgumentTypeError(f"expected WxH such as 640x384, got {text!r}")
    return int(w), int(h)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m build.export.quantize", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True, help="fp32 detector model directory")
    p.add_argument("--out", type=Path, required=True, help="directory for the int8 artifact")
    p.add_argument("--calib", type=int, default=64, help="number of calibration frames")
    p.add_argument("--calib-size", type=parse_wh, default=(640, 384), help="letterbox size for calibration")
    p.add_argument("--no-compare", action="store_true", help="skip the speed/agreement measurement (tests)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    recipe = shlex.join([".venv/bin/python", "-m", "build.export.quantize",
                         *(sys.argv[1:] if argv is None else argv)])
    frames = calibration_frames(a.calib)
    settings = QuantSettings(calib_frames=len(frames), calib_wh=a.calib_size)
    t = time.monotonic()
    int8 = quantize_artifact(a.model, a.out, frames, settings, recipe)
    log.info("quantised %s in %.1f s -> %s", a.model, time.monotonic() - t, int8.path)
    if a.no_compare:
        return 0
    fp32 = load_artifact(a.model)
    cmp = compare(fp32, int8, load_frames(HOLDOUT_SOURCES))
    (a.out / "quantize_report.json").write_text(json.dumps(cmp, indent=2) + "\n", encoding="utf-8")
    (a.out / "MODEL_CARD.md").write_text(card(int8, fp32, settings, cmp), encoding="utf-8")
    metrics = dict(int8.manifest.metrics)
    metrics.update({"vs_fp32_recall_iou0.5": round(cmp["recall"], 4),
                    "vs_fp32_precision_iou0.5": round(cmp["precision"], 4),
                    "detector_p50_ms_fp32_1thread": cmp["p50_ms_fp32"],
                    "detector_p50_ms_int8_1thread": cmp["p50_ms_int8"]})
    m = int8.manifest.model_copy(update={"metrics": metrics})
    (a.out / "manifest.json").write_text(m.model_dump_json(indent=2) + "\n", encoding="utf-8")
    load_artifact(a.out)
    print(json.dumps({k: cmp[k] for k in ("p50_ms_fp32", "p50_ms_int8", "recall", "precision", "all")}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
