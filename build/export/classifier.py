"""Export a MobileNetV3-Small checkpoint to ONNX with its manifest, classes.json and a parity check.

    python -m build.export.classifier --checkpoint runs/distill/student.pt --out models/classifier/mnv3s-facex7 \\
        --model-id mnv3s-facex7

Writes ``<model_id>.onnx`` (input ``input`` N x 3 x 160 x 160 float32, dynamic batch; output ``logits`` N x K;
opset 19, no external data), ``classes.json`` (the checkpoint's label order) and ``manifest.json`` (task
classifier, the daemon's pre-processing: stretch to 160 x 160, RGB, NCHW, x/255, ImageNet mean/std). Parity:
torch vs onnxruntime (through the daemon's OnnxBackend) on real face crops and random inputs, batch 1 and 5.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch

from build.classifier_data import PREPROCESS, to_input
from build.export.common import (
    OPSET,
    ExportError,
    export_onnx,
    file_facts,
    git_head,
    io_infos,
    max_abs_diff,
    run_onnx,
    write_manifest,
)
from build.nets.mobilenetv3 import MobileNetV3Small, count_params, mobilenet_v3_small
from edge_agent.assets import fetch
from edge_agent.manifest import Manifest, Provenance

log = logging.getLogger(__name__)

INPUT = "input"
OUTPUT = "logits"
PARITY_TOLERANCE = 1e-3  # max |logit difference|
PARITY_IMAGES = ("0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg", "single_face.jpg")
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ClassifierExport:
    manifest: Manifest
    onnx_path: Path
    parity_max_abs: float
    parity_argmax_equal: bool
    params: int


def load_checkpoint(path: Path) -> tuple[MobileNetV3Small, list[str], dict[str, Any]]:
    """A checkpoint of build.train_classifier (best.pt) or build.distill_classifier (student.pt)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "classes" not in ckpt:
        raise ExportError(f"{path}: expected a checkpoint with 'state_dict' and 'classes' (train/distill output)")
    classes = [str(c) for c in ckpt["classes"]]
    model = mobilenet_v3_small(len(classes))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval(), classes, ckpt


def parity_inputs(seed: int = 1337) -> npt.NDArray[np.float32]:
    """Real face images (the daemon's pre-processing) plus random tensors: (N, 3, 160, 160)."""
    real = []
    for name in PARITY_IMAGES:
        img = cv2.imread(str(fetch(name)), cv2.IMREAD_COLOR)
        if img is None:
            raise ExportError(f"cannot decode parity image {name}")
        real.append(to_input(np.asarray(img, np.uint8)))
    rnd = np.random.default_rng(seed).standard_normal((3, 3, 160, 160)).astype(np.float32)
    return np.concatenate([np.stack(real), rnd])


def parity_check(model: MobileNetV3Small, onnx_path: Path, manifest: Manifest) -> tuple[float, bool]:
    """Max |torch - onnxruntime| over batch 1 (each sample) and the whole batch; argmax equality."""
    x = parity_inputs()
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = run_onnx(onnx_path, manifest, {INPUT: x})[OUTPUT]
    worst = max_abs_diff({OUTPUT: ref}, {OUTPUT: got})[OUTPUT]
    for i in range(x.shape[0]):
        one = run_onnx(onnx_path, manifest, {INPUT: x[i:i + 1]})[OUTPUT]
        worst = max(worst, max_abs_diff({OUTPUT: ref[i:i + 1]}, {OUTPUT: one})[OUTPUT])
    same = bool((np.asarray(got).argmax(1) == ref.argmax(1)).all())
    log.info("parity: max |torch - onnxruntime| = %.3e over %d inputs; argmax equal: %s", worst, x.shape[0], same)
    if worst > PARITY_TOLERANCE:
        raise ExportError(f"{onnx_path.name}: onnxruntime differs from torch by {worst:.3e} > {PARITY_TOLERANCE}")
    return worst, same


def export_classifier(
    model: MobileNetV3Small,
    classes: Sequence[str],
    out_dir: Path,
    *,
    model_id: str,
    source: str,
    recipe: str,
    licence: str,
    teacher: str | None = None,
    data: str | None = None,
    metrics: dict[str, float | int | str] | None = None,
) -> ClassifierExport:
    if len(classes) != model.num_classes:
        raise ExportError(f"{len(classes)} class names for a {model.num_classes}-class model")
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{model_id}.onnx"
    from torch.export import Dim

    proto = export_onnx(model, torch.zeros(2, 3, 160, 160), onnx_path, input_name=INPUT, output_names=[OUTPUT],
                        dynamic_shapes={0: Dim("batch", min=1, max=1024)},
                        dim_names={INPUT: {0: "N"}, OUTPUT: {0: "N"}})
    inputs, outputs = io_infos(proto, {INPUT: "NCHW", OUTPUT: "NC"})
    (out_dir / "classes.json").write_text(json.dumps(list(classes), ensure_ascii=False) + "\n", encoding="utf-8")
    sha, size = file_facts(onnx_path)
    manifest = Manifest(
        model_id=model_id, task="classifier", architecture="mobilenet_v3_small (torchvision layout), Linear(1024->K)",
        file=onnx_path.name, format="onnx", sha256=sha, size_bytes=size, opset=OPSET, inputs=inputs,
        outputs=outputs, preprocess=PREPROCESS, labels=tuple(classes), classes_file="classes.json",
        provenance=Provenance(source=source, recipe=recipe, teacher=teacher, data=data,
                              created=dt.date.today().isoformat(), git_commit=git_head(REPO)),
        licence=licence,
    )
    worst, same = parity_check(model, onnx_path, manifest)
    params = count_params(model)
    all_metrics: dict[str, float | int | str] = {"params": params, "parity_max_abs_logits": worst,
                                                 "parity_argmax_equal": int(same), **(metrics or {})}
    manifest = manifest.model_copy(update={"metrics": all_metrics})
    write_manifest(Manifest.model_validate(manifest.model_dump()), out_dir)
    return ClassifierExport(manifest, onnx_path, worst, same, params)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m build.export.classifier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="best.pt (train_classifier) or student.pt (distill)")
    ap.add_argument("--out", required=True, help="model directory (onnx + manifest.json + classes.json)")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--source", default=None, help="provenance text (default: derived from the checkpoint)")
    ap.add_argument("--licence", default="MIT")
    ap.add_argument("--data", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ckpt_path = Path(a.checkpoint)
    model, classes, ckpt = load_checkpoint(ckpt_path)
    recipe = "python -m build.export.classifier " + " ".join(argv if argv is not None else sys.argv[1:])
    source = a.source or f"checkpoint {ckpt_path.name}"
    res = export_classifier(model, classes, Path(a.out), model_id=a.model_id, source=source, recipe=recipe,
                            licence=a.licence, data=a.data)
    print(json.dumps({"onnx": str(res.onnx_path), "params": res.params, "parity_max_abs": res.parity_max_abs,
                      "argmax_equal": res.parity_argmax_equal, "labels": classes,
                      "checkpoint_keys": sorted(ckpt)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
