"""The HEF artifact's manifest, derived from the ONNX artifact it was compiled from plus the compile facts.

Used at build time (``build/compile_hef.py``) and by the test helper that writes fake HEFs; the daemon only
reads the result. The HEF takes uint8 NHWC frames in the colour order the camera delivers (normalisation and
colour conversion are folded into the HEF by the model script), so the manifest's preprocess says exactly
that and the host does no arithmetic on pixels. Outputs are read as FLOAT32 (dequantised by HailoRT); each
output's quantisation (scale, zero point) is recorded in ``hailo.quant_info``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edge_agent.assets import sha256_file
from edge_agent.manifest import MANIFEST_NAME, Manifest, ModelArtifact

HEF_FILE = "model.hef"


@dataclass(frozen=True)
class HefOutput:
    """One HEF output stream: its HEF name, the ONNX tensor it replaces, per-frame shape, quantisation."""

    name: str  # HEF vstream name, e.g. "retinaface_mnet025/conv41"
    onnx_name: str  # the ONNX output (end node) it corresponds to
    shape: tuple[int, ...]  # per frame: (H, W, C) for NHWC convs, (C,) for NC
    scale: float
    zero_point: float


@dataclass(frozen=True)
class CompileFacts:
    """What a compile produced, independent of how (the DFC, or the test fake)."""

    arch: Literal["hailo8", "hailo8l", "hailo8r"]
    dfc_version: str
    input_name: str  # HEF input vstream name
    input_hw: tuple[int, int]  # (height, width)
    outputs: tuple[HefOutput, ...]
    color_order: Literal["RGB", "BGR"]  # the order the HEF input takes (as the camera delivers)
    recipe: str
    created: str | None = None
    git_commit: str | None = None


def hef_network_name(model_id: str) -> str:
    """DFC network names are identifiers: letters, digits and underscores."""
    return "".join(c if c.isalnum() else "_" for c in model_id)


def onnx_output_layout(art: ModelArtifact, name: str, rank: int) -> str:
    """The layout of ONNX output ``name`` (of ``rank`` dims): "NC" for 2-D outputs, the raw heads' layout for a
    raw-heads detector, else the manifest's layout for that output (NCHW when it names none)."""
    m = art.manifest
    if rank == 2:
        return "NC"
    if m.detector_outputs is not None and m.detector_outputs.kind == "raw_heads":
        return m.detector_outputs.heads_layout
    info = next(t for t in m.outputs if t.name == name)
    return info.layout or "NCHW"


def hef_manifest(onnx: ModelArtifact, facts: CompileFacts, hef_path: Path) -> Manifest:
    """The manifest of ``hef_path``, compiled from ``onnx`` as ``facts`` describe. Raises ValueError if the
    ONNX form cannot be deployed on Hailo (a detector must be the raw-heads deploy variant)."""
    m = onnx.manifest
    if m.format != "onnx":
        raise ValueError(f"{m.model_id}: expected the ONNX artifact to compile from, got format {m.format!r}")
    by_onnx = {o.onnx_name: o for o in facts.outputs}
    if set(by_onnx) != {t.name for t in m.outputs}:
        raise ValueError(f"{m.model_id}: HEF outputs map {sorted(by_onnx)} but the ONNX outputs are "
                         f"{sorted(t.name for t in m.outputs)}")
    data: dict[str, Any] = m.model_dump(mode="json")
    detector_outputs = data.get("detector_outputs")
    if m.task == "detector":
        assert m.detector_outputs is not None
        if m.detector_outputs.kind != "raw_heads":
            raise ValueError(
                f"{m.model_id}: a Hailo detector must be the raw-heads deploy variant (per-stride conv outputs, "
                "decoded on the host); this artifact's detector_outputs kind is "
                f"{m.detector_outputs.kind!r}. Export with --form raw_heads"
            )
        detector_outputs = {
            "kind": "raw_heads",
            "heads": [
                {"stride": h.stride, "cls": by_onnx[h.cls].name, "box": by_onnx[h.box].name,
                 "landmarks": by_onnx[h.landmarks].name}
                for h in m.detector_outputs.heads
            ],
            "heads_layout": "NHWC",
        }
    pre = m.preprocess
    h, w = facts.input_hw
    if (w, h) != tuple(pre.input_size) and not pre.dynamic_size:
        raise ValueError(f"{m.model_id}: HEF input {w}x{h} differs from the ONNX model's fixed {pre.input_size}")
    data.update(
        model_id=f"{m.model_id}-{facts.arch}",
        architecture=f"{m.architecture} [Hailo {facts.arch} HEF]",
        file=hef_path.name,
        format="hef",
        sha256=sha256_file(hef_path),
        size_bytes=hef_path.stat().st_size,
        opset=None,
        inputs=[{"name": facts.input_name, "shape": ["N", h, w, 3], "dtype": "uint8", "layout": "NHWC"}],
        outputs=[
            {"name": o.name, "shape": ["N", *o.shape], "dtype": "float32",
             "layout": "NHWC" if len(o.shape) == 3 else "NC"}
            for o in (by_onnx[t.name] for t in m.outputs)
        ],
        preprocess={
            "input_size": [w, h], "dynamic_size": False, "size_multiple": pre.size_multiple,
            "resize": pre.resize, "color_order": facts.color_order, "layout": "NHWC", "dtype": "uint8",
            "scale": 1.0, "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0],
        },
        detector_outputs=detector_outputs,
        hailo={
            "arch": facts.arch,
            "dfc_version": facts.dfc_version,
            "quant_info": {o.name: {"scale": o.scale, "zero_point": o.zero_point} for o in facts.outputs},
        },
        provenance={
            "source": f"compiled from {m.model_id} ({m.file}, sha256 {m.sha256}); its provenance: "
                      f"{m.provenance.source}",
            "recipe": facts.recipe,
            "teacher": m.provenance.teacher,
            "data": m.provenance.data,
            "created": facts.created,
            "git_commit": facts.git_commit,
        },
        metrics={},  # the quantised model's accuracy is measured on the device, not inherited
    )
    return Manifest.model_validate(data)


def write_hef_artifact(onnx: ModelArtifact, facts: CompileFacts, hef_bytes: bytes, out_dir: Path) -> Path:
    """Write ``model.hef``, ``manifest.json`` (and ``classes.json`` for classifiers) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    hef_path = out_dir / HEF_FILE
    hef_path.write_bytes(hef_bytes)
    manifest = hef_manifest(onnx, facts, hef_path)
    if manifest.classes_file:
        shutil.copyfile(onnx.directory / manifest.classes_file, out_dir / manifest.classes_file)
    (out_dir / MANIFEST_NAME).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2) + "\n",
                                         encoding="utf-8")
    return out_dir


def quant_from_range(lo: float, hi: float) -> tuple[float, float]:
    """8-bit asymmetric quantisation (scale, zero point) covering [lo, hi] (always including 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0 / 255.0
    zp = float(min(255, max(0, round(-lo / scale))))
    return scale, zp


def quantise_u8(y: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``y`` as uint8 with the (scale, zero point) of :func:`quant_from_range` over its own range, as a HEF's
    8-bit output carries it (the stand-ins for the chip use this)."""
    scale, zp = quant_from_range(float(y.min()), float(y.max()))
    return np.clip(np.rint(y / scale + zp), 0, 255).astype(np.uint8), scale, zp

