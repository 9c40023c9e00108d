"""``edge-bench eval cls|e2e|wider|ap50``: load the models, run, write the result JSON + CSV/PNG side files."""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.backends.onnx import OnnxBackend
from edge_agent.bench import e2e as e2e_mod
from edge_agent.bench import wider as wider_mod
from edge_agent.bench.detection import ap50, make_image
from edge_agent.bench.machine import machine_info
from edge_agent.bench.metrics import BinaryReport, binary_report, resolve_positive
from edge_agent.bench.plots import confusion_png, pr_png
from edge_agent.bench.report import RESULT_SCHEMA, now_iso, results_dir
from edge_agent.bench.runner import parse_size
from edge_agent.classifier import ExpressionClassifier
from edge_agent.detector import FaceDetector
from edge_agent.manifest import ModelArtifact, load_artifact
from edge_agent.settings import ClassifierSettings, DetectorSettings

log = logging.getLogger(__name__)

# Reference figures from seed 001 (their private M1/M2/K7 splits; not re-measured here).
SEED_BASELINES = {
    "FaceAPI M1 matched top-1 (coverage)": "42.07 % (50.08 %)",
    "FaceAPI M2 matched top-1 (coverage)": "32.09 % (50.08 %)",
    "MobileNetV3-Small finetune top-1 on crops M1 / M2 / K7": "74.94 % / 74.27 % / 68.65 %",
    "MobileNetV3-Small finetune macro-F1 (test) M1 / M2 / K7": "0.7298 / 0.7290 / 0.6546",
}
SEED_WIDER = {
    "RetinaFace-0.25 (seed 004) easy / medium / hard": "90.7 / 88.1 / 73.4 %",
    "RetinaFace + WFPN + SCM + EDAM + DCN (seed 004)": "91.7 / 89.8 / 76.1 %",
}


def _classifier(path: Path | None, margin: float = 0.0) -> ExpressionClassifier:
    art = load_artifact(path or Path(ClassifierSettings().model))
    return ExpressionClassifier(art, OnnxBackend(art.path, intra_op_threads=0, inter_op_threads=1),
                                margin=margin, max_batch=1)


def _detector_art(path: Path | None) -> ModelArtifact:
    return load_artifact(path or Path(DetectorSettings().model))


class NativeSizeDetector:
    """A FaceDetector that runs each image at its own size (rounded up to the size multiple) when the model
    allows it and no --input-size was given -- the way RetinaFace is evaluated on WIDER (biubug6
    ``test_widerface.py``: ``origin_size``, top 5000 candidates, NMS 0.4, at most 750 faces)."""

    def __init__(self, art: ModelArtifact, input_size: tuple[int, int] | None, score_threshold: float,
                 nms_iou: float = 0.4, max_faces: int = 750) -> None:
        self.art = art
        self.backend = OnnxBackend(art.path, intra_op_threads=0, inter_op_threads=1)
        self.native = input_size is None and art.manifest.preprocess.dynamic_size
        self.kw: dict[str, Any] = {"score_threshold": score_threshold, "nms_iou": nms_iou, "top_k": 5000,
                                   "max_faces": max_faces}
        self.fixed = None if self.native else FaceDetector(art, self.backend, input_size=input_size, **self.kw)

    def detector_for(self, img: np.ndarray) -> FaceDetector:
        if self.fixed is not None:
            return self.fixed
        m = self.art.manifest.preprocess.size_multiple
        size = (math.ceil(img.shape[1] / m) * m, math.ceil(img.shape[0] / m) * m)
        return FaceDetector(self.art, self.backend, input_size=size, **self.kw)

    def detect(self, img: np.ndarray) -> Any:
        return self.detector_for(img).detect(img)


def _out(args: argparse.Namespace, kind: str, name: str) -> tuple[Path, str]:
    out_dir: Path = args.eval_out or results_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{kind}_{name}_{now_iso().replace(':', '').replace('-', '')}"
    return out_dir, stem


def _save(out_dir: Path, stem: str, data: dict[str, Any]) -> Path:
    path = out_dir / f"{stem}.json"
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return path


def _header(kind: str, name: str) -> dict[str, Any]:
    return {"schema": RESULT_SCHEMA, "kind": f"eval-{kind}", "config_name": name, "created": now_iso(),
            "machine": machine_info()}


def _cls_table(rep: dict[str, Any]) -> str:
    lines = [f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for lab, v in rep["per_class"].items():
        lines.append(f"{lab:<14}{v['precision']:>10.4f}{v['recall']:>10.4f}{v['f1']:>10.4f}{v['support']:>9}")
    lines.append(f"top-1 {100 * rep['top1']:.2f} %  macro-F1 {rep['macro_f1']:.4f}  n {rep['n']}")
    return "\n".join(lines)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def binary_text(b: dict[str, Any]) -> str:
    """One line of the positive-class figures of a result's ``binary`` block."""
    return (f"positive class {b['positive']!r}: precision {b['precision']:.4f} recall {b['recall']:.4f} "
            f"F1 {b['f1']:.4f} (tp {b['tp']} fp {b['fp']} fn {b['fn']} tn {b['tn']}), "
            f"AP {_fmt(b['average_precision'])} ROC-AUC {_fmt(b['roc_auc'])}")


def _binary_block(out_dir: Path, stem: str, rep: BinaryReport, title: str) -> tuple[dict[str, Any], list[str]]:
    """The JSON ``binary`` block, the PR-curve CSV (``<stem>_pr.csv``) and PNG (``<stem>_pr.png``)."""
    c = rep.curve
    pr_csv = out_dir / f"{stem}_pr.csv"
    pr_csv.write_text("threshold,precision,recall\n" + "".join(
        f"{t:.6f},{p:.6f},{r:.6f}\n" for t, p, r in zip(c.thresholds, c.precision, c.recall, strict=True)),
        encoding="utf-8")
    block = {**rep.to_dict(), "pr_curve": pr_csv.name}
    plots: list[str] = []
    pos = rep.labels[rep.positive]
    if rep.average_precision is None:
        log.warning("no %r sample in the data: no PR curve or average precision", pos)
    else:
        png = out_dir / f"{stem}_pr.png"
        if pr_png(png, {f"{pos} vs rest": (c.recall, c.precision, rep.average_precision)}, title,
                  points={"argmax decision": (rep.recall, rep.precision)}, step=True):
            plots.append(png.name)
    return block, plots


def eval_cls(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    label_map = e2e_mod.load_label_map(args.label_map)
    if args.csv is not None:
        samples = e2e_mod.read_csv(args.csv, args.project_root, need_box=False, label_map=label_map)
        name = args.name or args.csv.stem
    else:
        samples = e2e_mod.read_class_folders(args.dir)
        samples = [e2e_mod.Sample(s.path, label_map.get(s.label, s.label)) for s in samples]
        name = args.name or args.dir.name
    clf = _classifier(args.eval_classifier)
    positive = resolve_positive(clf.labels, args.positive)
    res = e2e_mod.eval_crops(samples, clf)
    rep = res.report.to_dict()
    out_dir, stem = _out(args, "cls", name)
    png = out_dir / f"{stem}_confusion.png"
    plots = [png.name] if confusion_png(png, res.report.confusion, res.report.labels,
                                        f"{clf.manifest.model_id} on {name}") else []
    preds_csv = out_dir / f"{stem}_preds.csv"
    with preds_csv.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["path", "true", "pred", "score", *(f"p_{lab}" for lab in clf.labels)])
        for (p, t, q, s), probs in zip(res.predictions, res.probs, strict=True):
            w.writerow([p, t, q, f"{s:.6f}", *(f"{v:.6f}" for v in probs)])
    data = {**_header("cls", name), "model": clf.manifest.model_id, "labels": list(clf.labels),
            "input_size": list(clf.input_wh), "data": str(args.csv or args.dir),
            "summary": {"top1": rep["top1"], "macro_f1": rep["macro_f1"], "n": rep["n"],
                        "unreadable": res.unreadable},
            "report": rep, "plots": plots, "predictions": preds_csv.name, "baselines": SEED_BASELINES}
    text = f"{clf.manifest.model_id} on {name}\n{_cls_table(rep)}"
    if positive is not None:
        brep = binary_report(res.y_true, res.y_pred, res.probs[:, positive], clf.labels, positive)
        data["binary"], more = _binary_block(out_dir, stem, brep, f"{clf.manifest.model_id} on {name}")
        plots += more
        text += "\n" + binary_text(data["binary"])
    path = _save(out_dir, stem, data)
    return data, f"{text}\nwrote {path}"


def eval_e2e(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    label_map = e2e_mod.load_label_map(args.label_map)
    samples = e2e_mod.read_csv(args.csv, args.project_root, need_box=True, label_map=label_map)
    name = args.name or args.csv.stem
    clf = _classifier(args.eval_classifier, margin=ClassifierSettings().margin)
    positive = resolve_positive(clf.labels, args.positive)
    det_art = _detector_art(args.eval_detector)
    size = parse_size(args.eval_input_size) if args.eval_input_size else None
    det = FaceDetector(det_art, OnnxBackend(det_art.path, intra_op_threads=0, inter_op_threads=1),
                       score_threshold=DetectorSettings().score_threshold, input_size=size)
    rows = list(e2e_mod.e2e_rows(samples, det, clf))
    m, rep = e2e_mod.summarise_e2e(rows, clf.labels, args.iou)
    out_dir, stem = _out(args, "e2e", name)
    rows_csv = out_dir / f"{stem}_rows.csv"
    e2e_mod.write_rows(rows_csv, rows, clf.labels)
    png = out_dir / f"{stem}_confusion.png"
    plots = [png.name] if confusion_png(png, rep.confusion, rep.labels, f"matched rows, {name}") else []
    data = {**_header("e2e", name), "detector": det_art.manifest.model_id, "classifier": clf.manifest.model_id,
            "labels": list(clf.labels), "detector_input": list(det.input_wh), "iou_threshold": args.iou,
            "data": str(args.csv), "summary": {**m.to_dict(), "matched_macro_f1": rep.macro_f1},
            "matched_report": rep.to_dict(), "rows": rows_csv.name, "plots": plots, "baselines": SEED_BASELINES}
    text = (f"{det_art.manifest.model_id} + {clf.manifest.model_id} on {name} ({m.total} images)\n"
            f"matched top-1 {100 * m.accuracy:.2f} % at coverage {100 * m.coverage:.2f} % "
            f"(overall {100 * m.overall:.2f} %), matched macro-F1 {rep.macro_f1:.4f}\n"
            f"seed 001 reference: FaceAPI 42.07 % / 32.09 % matched (coverage 50.08 %); MobileNetV3 on crops "
            f"74.94 % / 74.27 % / 68.65 %")
    if positive is not None:
        brep = e2e_mod.matched_binary(rows, clf.labels, args.iou, positive)
        data["binary"], more = _binary_block(out_dir, stem, brep, f"matched rows, {name}")
        data["binary"]["over"] = "matched rows"
        plots += more
        text += "\nmatched rows, " + binary_text(data["binary"])
    path = _save(out_dir, stem, data)
    return data, f"{text}\nwrote {path}"


def eval_wider(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    gt = wider_mod.load_ground_truth(args.gt)
    det_name = "predictions"
    if args.images is not None:
        det_art = _detector_art(args.eval_detector)
        det_name = det_art.manifest.model_id
        size = parse_size(args.eval_input_size) if args.eval_input_size else None
        det = NativeSizeDetector(det_art, size, args.score_threshold)
        pred_dir = args.pred_dir or (args.eval_out or results_dir()) / f"wider_pred_{det_name}"
        total = sum(len(f) for f in gt.files)
        done = 0
        for i, event in enumerate(gt.events):
            for name in gt.files[i]:
                img_path = args.images / event / f"{name}.jpg"
                img = e2e_mod.read_image(img_path)
                if img is None:
                    raise wider_mod.WiderError(f"{img_path}: missing or unreadable (is --images WIDER_val/images?)")
                dets = det.detect(img)
                wider_mod.write_pred_file(pred_dir / event / f"{name}.txt", name, dets.boxes, dets.scores)
                done += 1
                if done % 200 == 0:
                    log.warning("WIDER: %d/%d images", done, total)
    elif args.pred_dir is not None:
        pred_dir = args.pred_dir
    else:
        raise ValueError("eval wider needs --images (run our detector) or --pred-dir (evaluate predictions)")
    results = wider_mod.evaluate(wider_mod.read_predictions(pred_dir), gt)
    name = args.name or det_name
    out_dir, stem = _out(args, "wider", name)
    png = out_dir / f"{stem}_pr.png"
    plots = [png.name] if pr_png(png, {k: (r.recall, r.precision, r.ap) for k, r in results.items()},
                                 f"WIDER FACE val, {name}") else []
    summ = wider_mod.summary(results)
    data = {**_header("wider", name), "pred_dir": str(pred_dir), "summary": summ, "plots": plots,
            "baselines": SEED_WIDER}
    path = _save(out_dir, stem, data)
    text = (f"WIDER FACE val ({name}): easy {100 * summ['easy_ap']:.2f}  medium {100 * summ['medium_ap']:.2f}  "
            f"hard {100 * summ['hard_ap']:.2f} % AP\nwrote {path}")
    return data, text


def eval_ap50(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    spec = json.loads(args.gt.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or not isinstance(spec.get("images"), list):
        raise e2e_mod.EvalDataError(f"{args.gt}: expected {{\"images\": [{{\"file\": ..., \"boxes\": [[x1,y1,x2,y2]"
                                    f", ...], \"ignore\": [[...]]}}]}} (docs/bench.md)")
    det_art = _detector_art(args.eval_detector)
    size = parse_size(args.eval_input_size) if args.eval_input_size else None
    det = NativeSizeDetector(det_art, size, args.score_threshold)
    images = []
    for k, entry in enumerate(spec["images"]):
        try:
            path = args.images / entry["file"]
            boxes = [list(map(float, b)) for b in entry.get("boxes", [])]
            ign = [list(map(float, b)) for b in entry.get("ignore", [])]
        except (KeyError, TypeError, ValueError):
            raise e2e_mod.EvalDataError(f"{args.gt}: images[{k}] needs 'file' and 'boxes' [[x1,y1,x2,y2], ...]"
                                        ) from None
        img = e2e_mod.read_image(path)
        if img is None:
            raise e2e_mod.EvalDataError(f"{path}: missing or unreadable")
        dets = det.detect(img)
        gt = np.asarray(boxes + ign, np.float64).reshape(-1, 4)
        images.append(make_image(dets.boxes, dets.scores, gt, [False] * len(boxes) + [True] * len(ign)))
    res = ap50(images)
    name = args.name or f"{args.gt.stem}_{det_art.manifest.model_id}"
    out_dir, stem = _out(args, "ap50", name)
    png = out_dir / f"{stem}_pr.png"
    plots = [png.name] if pr_png(png, {"AP50": (res.recall, res.precision, res.ap)}, name) else []
    data = {**_header("ap50", name), "detector": det_art.manifest.model_id, "summary": res.to_dict(),
            "plots": plots}
    path = _save(out_dir, stem, data)
    return data, f"AP50 {100 * res.ap:.2f} % over {res.num_positives} faces ({len(images)} images)\nwrote {path}"


def run_eval(args: argparse.Namespace) -> tuple[dict[str, Any], str]:
    kind = args.eval_kind
    if kind == "cls":
        return eval_cls(args)
    if kind == "e2e":
        return eval_e2e(args)
    if kind == "wider":
        return eval_wider(args)
    return eval_ap50(args)
