"""Train / evaluate an image classifier (MobileNetV3-Small or EfficientNet-B0) on CSV splits or class folders.

    python -m build.train_classifier --mode finetune --epochs 30 --batch 256 --workers 4 \\
        --lr-backbone 1e-4 --lr-head 5e-4 --train-csv data/train.csv --val-csv data/val.csv \\
        --test-csv data/test.csv --project-root . --out runs/finetune --verbose

Outputs in ``--out``: ``best.pt``, ``val_metrics_best.json``, ``test_metrics.json`` (top1, macro_f1, per-class
precision/recall/f1, confusion matrix), ``test_preds.csv`` (``path,true,pred``), ``classes.json``, ``history.json``.

Seed 003's EfficientNet-B0 binary recipe is ``--preset seed003`` (two stages: head only on a frozen backbone, then
the last 3 blocks at a 10x lower learning rate; dropout 0.3, Adam with weight decay 1e-4, ReduceLROnPlateau and
early stopping on the validation loss, balanced class weights, batch 32, 224 x 224, AMP on CUDA):

    python -m build.train_classifier --preset seed003 --train-dir data/train --val-dir data/val \
        --test-dir data/test --out runs/effnet_binary --verbose

K is the number of distinct training labels (2 for a binary task). ``best.pt`` records the architecture, the input
size, the dropout and the label order, so ``build.export.classifier`` needs no extra flags.

There are NO ImageNet weights in this project (nothing is downloaded from a hub): without ``--init`` the network
starts from torchvision's random initialisation, so ``--mode probe`` (or stage 1 of ``two_stage``) on a fresh
network only trains a head over random features. Use ``--init`` with a checkpoint of this trainer (``best.pt``),
of ``build.distill_classifier``, or a torchvision (or, for efficientnet_b0, timm) ImageNet state_dict you have.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm import tqdm

from build.classifier_data import (
    AugmentConfig,
    ImageDataset,
    Sample,
    check_labels,
    read_csv_split,
    read_folder_split,
    resolve_classes,
)
from build.nets.classifiers import ARCHS, arch_of, build_classifier, check_input_size, get_arch
from build.nets.efficientnet import CheckpointLayoutError, EfficientNetB0, is_timm_layout, timm_to_torchvision

log = logging.getLogger(__name__)

DEFAULT_ARCH = "mobilenet_v3_small"
MODES = ("probe", "finetune", "two_stage")

# Seed 003 (EfficientNet-B0 binary, PyTorch): its hyper-parameter table, as trainer defaults. Explicit flags win.
PRESETS: dict[str, dict[str, Any]] = {
    "seed003": {
        "arch": "efficientnet_b0", "img_size": 224, "mode": "two_stage", "stage_epochs": [15, 20],
        "batch": 32, "optimizer": "adam", "lr_head": 1e-3, "stage2_lr_factor": 0.1, "weight_decay": 1e-4,
        "dropout": 0.3, "class_weights": "balanced", "plateau_patience": 3, "patience": 5, "select": "val_loss",
    },
}


# ----------------------------------------------------------------------------------------- pure helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def class_weights(counts: Sequence[int], kind: str, beta: float = 0.999) -> list[float]:
    """Per-class loss weights: ``none`` (1), ``balanced`` (n / (K * n_c)), ``effective`` (Cui et al. 2019,
    (1 - beta) / (1 - beta^n_c)), the last two normalised to mean 1. A class with no samples gets weight 0."""
    k = len(counts)
    if kind == "none":
        return [1.0] * k
    if kind == "balanced":
        raw = [(sum(counts) / (k * c)) if c else 0.0 for c in counts]
    elif kind == "effective":
        raw = [((1 - beta) / (1 - beta**c)) if c else 0.0 for c in counts]
    else:
        raise ValueError(f"unknown class-weight kind {kind!r}: use none, balanced or effective")
    present = [w for w in raw if w > 0]
    mean = sum(present) / len(present)
    return [w / mean for w in raw]


def soft_target_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                     gamma: float = 0.0) -> torch.Tensor:
    """Cross-entropy (gamma=0) or focal loss (gamma>0) against soft targets (one-hot, smoothed or MixUp-ed).

    ``loss_i = -sum_c w_c * t_ic * (1 - p_ic)^gamma * log p_ic``, averaged over the batch.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    term = target * logp
    if gamma > 0:
        term = term * (1 - logp.exp()).pow(gamma)
    if weights is not None:
        term = term * weights[None, :]
    return -term.sum(dim=1).mean()


def mixup(x: torch.Tensor, y: torch.Tensor, alpha: float, rng: np.random.Generator,
          gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """MixUp (Zhang et al. 2018): lambda ~ Beta(alpha, alpha) from ``rng``, partner order from ``gen``;
    ``y`` are soft targets and are mixed with the same lambda."""
    if alpha <= 0 or x.shape[0] < 2:
        return x, y
    lam = float(rng.beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * y + (1 - lam) * y[perm]


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.01) -> float:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def classification_metrics(true: Sequence[int], pred: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """top1, macro_f1 (over classes present in true or pred), per-class precision/recall/f1/support, confusion
    matrix (rows = true, columns = predicted, in ``classes`` order)."""
    k = len(classes)
    cm = np.zeros((k, k), np.int64)
    for t, p in zip(true, pred, strict=True):
        cm[t, p] += 1
    per: dict[str, dict[str, float | int]] = {}
    f1s: list[float] = []
    for i, c in enumerate(classes):
        tp = int(cm[i, i])
        support, predicted = int(cm[i].sum()), int(cm[:, i].sum())
        prec = tp / predicted if predicted else 0.0
        rec = tp / support if support else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[c] = {"precision": prec, "recall": rec, "f1": f1, "support": support}
        if support or predicted:
            f1s.append(f1)
    n = int(cm.sum())
    return {
        "n": n,
        "top1": float(np.trace(cm) / n) if n else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
    }


# ----------------------------------------------------------------------------------------- stages
def head_modules(model: nn.Module) -> list[nn.Module]:
    classifier = model.classifier
    assert isinstance(classifier, nn.Module)
    return [classifier]


def last_blocks(model: nn.Module) -> list[nn.Module]:
    """The "last blocks" of the staged unfreeze, per architecture (``ClassifierArch.last_blocks_doc``):
    MobileNetV3-Small: features.10, .11 + the 1x1 head conv features.12; EfficientNet-B0 (seed 003's "last 3
    blocks"): the MBConv stages features.5, .6, .7 + the 1x1 head conv features.8."""
    return arch_of(model).last_blocks(model)


def set_trainable(model: nn.Module, stage: int) -> None:
    """Stage 1: head only; stage 2: last blocks + head; stage 3: everything."""
    for p in model.parameters():
        p.requires_grad = stage >= 3
    groups = head_modules(model) + (last_blocks(model) if stage == 2 else [])
    for m in groups:
        for p in m.parameters():
            p.requires_grad = True


def freeze_bn_of_frozen(model: nn.Module) -> None:
    """Keep BatchNorm running statistics fixed in modules whose weights are frozen."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad:
            m.eval()


def stage_schedule(mode: str, epochs: int) -> list[int]:
    """Stage per epoch. probe: all 1. finetune: ~20% head, ~30% last blocks + head, rest everything.
    (two_stage has its own loop: see :func:`run_two_stage`.)"""
    if mode == "probe":
        return [1] * epochs
    s1 = max(1, round(0.2 * epochs))
    s2 = max(1, round(0.3 * epochs)) if epochs - s1 > 1 else 0
    return ([1] * s1 + [2] * s2 + [3] * epochs)[:epochs]


# ----------------------------------------------------------------------------------------- run
@dataclass
class Splits:
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]


def load_splits(a: argparse.Namespace) -> Splits:
    root = Path(a.project_root)

    def one(csv_arg: str | None, dir_arg: str | None, name: str) -> list[Sample]:
        if csv_arg and dir_arg:
            raise SystemExit(f"give either --{name}-csv or --{name}-dir, not both")
        if csv_arg:
            return read_csv_split(Path(csv_arg), root)
        if dir_arg:
            return read_folder_split(Path(dir_arg))
        raise SystemExit(f"missing --{name}-csv (or --{name}-dir)")

    return Splits(one(a.train_csv, a.train_dir, "train"), one(a.val_csv, a.val_dir, "val"),
                  one(a.test_csv, a.test_dir, "test"))


def parse_classes(arg: str | None) -> list[str] | None:
    if not arg:
        return None
    p = Path(arg)
    if p.suffix == ".json" and p.is_file():
        loaded = json.loads(p.read_text(encoding="utf-8"))
        return [str(c) for c in loaded]
    return [c.strip() for c in arg.split(",") if c.strip()]


def _state_dict_of(raw: Any, path: Path) -> dict[str, torch.Tensor]:
    sd = raw["state_dict"] if isinstance(raw, dict) and "state_dict" in raw else raw
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise SystemExit(f"--init {path}: not a state_dict (nor a checkpoint with 'state_dict')")
    return sd


def load_init(model: nn.Module, path: Path, num_classes: int) -> None:
    """Load a checkpoint (ours: {'state_dict': ...} or a bare torchvision-layout state_dict; for efficientnet_b0 a
    timm-layout one too). A head of a different K is dropped and re-initialised; everything else must match
    exactly (BatchNorm ``num_batches_tracked`` counters may be absent, as in some published files)."""
    spec = arch_of(model)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(raw, dict) and isinstance(raw.get("arch"), str) and raw["arch"] != spec.name:
        raise SystemExit(f"--init {path}: a {raw['arch']} checkpoint, but --arch is {spec.name}")
    sd = _state_dict_of(raw, path)
    if isinstance(model, EfficientNetB0) and is_timm_layout(sd):
        try:
            sd = timm_to_torchvision(sd)
        except CheckpointLayoutError as exc:
            raise SystemExit(f"--init {path}: {exc}") from exc
        log.info("--init %s: timm layout, keys mapped to torchvision's", path)
    allowed_missing: set[str] = set()
    head_w = sd.get(spec.head_prefix + "weight")
    if head_w is not None and head_w.shape[0] != num_classes:
        log.warning("--init %s has a %d-class head; re-initialising it for %d classes",
                    path, head_w.shape[0], num_classes)
        sd = {k: v for k, v in sd.items() if not k.startswith(spec.head_prefix)}
        allowed_missing = {spec.head_prefix + "weight", spec.head_prefix + "bias"}
    own = model.state_dict()
    for key in own:
        if key.endswith("num_batches_tracked") and key not in sd:
            sd[key] = own[key]
    missing = sorted(set(own) - set(sd) - allowed_missing)
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise SystemExit(f"--init {path}: not a state_dict of {spec.name} ({len(missing)} missing keys, e.g. "
                         f"{missing[:4]}; {len(unexpected)} unexpected, e.g. {unexpected[:4]})")
    try:
        model.load_state_dict(sd, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise SystemExit(f"--init {path}: shapes do not match {spec.name}: {str(exc)[:600]}") from exc
    log.info("initialised from %s", path)


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader[Any], device: torch.device, desc: str,
            verbose: bool, *, weights: torch.Tensor | None = None) -> tuple[list[int], list[int], float]:
    """(true labels, predicted labels, mean (class-weighted) cross-entropy) over a loader."""
    model.eval()
    trues: list[int] = []
    preds: list[int] = []
    loss_sum, n = 0.0, 0
    for x, y in tqdm(loader, desc=desc, leave=False, disable=not verbose):
        logits = model(x.to(device))
        target = F.one_hot(y.to(device), logits.shape[1]).float()
        loss_sum += soft_target_loss(logits, target, weights).item() * x.shape[0]
        n += x.shape[0]
        preds += logits.argmax(1).cpu().tolist()
        trues += y.tolist()
    return trues, preds, loss_sum / max(1, n)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m build.train_classifier",
        description="Train a classifier (mobilenet_v3_small at 160x160 or efficientnet_b0 at 224x224; RGB, ImageNet "
                    "mean/std; K = number of training labels, 2 for a binary task) on CSV splits or class folders. "
                    "NOTE: no ImageNet weights exist in this project; without --init training starts from random "
                    "initialisation (probe mode then trains a head over random features).",
    )
    for split in ("train", "val", "test"):
        ap.add_argument(f"--{split}-csv", help=f"{split} CSV: path + label_en|orig_kor|label")
        ap.add_argument(f"--{split}-dir", help=f"{split} folder: <dir>/<class>/<image>")
    ap.add_argument("--project-root", default=".", help="CSV paths are relative to this directory")
    ap.add_argument("--out", required=True, help="run directory (created)")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="seed003: EfficientNet-B0 two-stage recipe (explicit flags override its values)")
    ap.add_argument("--arch", choices=sorted(ARCHS), default=DEFAULT_ARCH)
    ap.add_argument("--img-size", type=int, default=None,
                    help="square input size, a multiple of 32 (default: 160 mobilenet_v3_small, 224 efficientnet_b0)")
    ap.add_argument("--dropout", type=float, default=None, help="head dropout (default: the architecture's, 0.2)")
    ap.add_argument("--mode", choices=MODES, default="finetune",
                    help="probe: backbone frozen, head only; finetune: head -> last blocks + head -> all (one "
                         "warmup+cosine schedule); two_stage: head only, then last blocks + head at "
                         "--stage2-lr-factor x the LR, each stage with ReduceLROnPlateau and early stopping")
    ap.add_argument("--epochs", type=int, default=30, help="probe/finetune epochs")
    ap.add_argument("--stage-epochs", type=int, nargs=2, default=[15, 20], metavar=("N1", "N2"),
                    help="two_stage: maximum epochs of stage 1 and stage 2")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--optimizer", choices=["adamw", "adam"], default="adamw",
                    help="adam applies --weight-decay as L2 (torch.optim.Adam), adamw decoupled")
    ap.add_argument("--lr-head", type=float, default=5e-4, help="head LR (two_stage: stage 1 LR)")
    ap.add_argument("--lr-backbone", type=float, default=1e-4, help="backbone LR (probe/finetune)")
    ap.add_argument("--stage2-lr-factor", type=float, default=0.1, help="two_stage: stage 2 LR = this x --lr-head")
    ap.add_argument("--plateau-patience", type=int, default=3,
                    help="two_stage: ReduceLROnPlateau patience (epochs without a lower val loss; factor 0.1)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--classes", help="label order: comma list or a classes.json (default: sorted unique labels)")
    ap.add_argument("--init", help="checkpoint to start from (best.pt, or a torchvision/timm state_dict of --arch)")
    ap.add_argument("--class-weights", choices=["none", "balanced", "effective"], default="none")
    ap.add_argument("--oversample", action="store_true", help="sample classes uniformly (WeightedRandomSampler)")
    ap.add_argument("--focal-gamma", type=float, default=0.0, help=">0: focal loss with this gamma")
    ap.add_argument("--label-smoothing", type=float, default=0.0)
    ap.add_argument("--mixup", type=float, default=0.0, help="MixUp Beta(alpha, alpha); 0 disables")
    ap.add_argument("--warmup-epochs", type=float, default=1.0, help="probe/finetune: linear warmup")
    ap.add_argument("--select", choices=["macro_f1", "val_loss"], default="macro_f1",
                    help="best.pt = the epoch with the highest val macro-F1 or the lowest val loss; --patience "
                         "watches the same quantity")
    ap.add_argument("--patience", type=int, default=0,
                    help="early stopping (per stage in two_stage) after N epochs without improvement; 0 disables")
    ap.add_argument("--no-augment", action="store_true", help="disable crop/flip/rotation/colour/blur augmentation")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--verbose", action="store_true", help="progress bars and per-epoch logs")
    return ap


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse with the preset's values as defaults (so explicit flags override them), then resolve the
    architecture-dependent defaults (input size, dropout) and validate."""
    ap = build_parser()
    pre, _ = ap.parse_known_args(argv)
    if pre.preset:
        ap.set_defaults(**PRESETS[pre.preset])
    a = ap.parse_args(argv)
    spec = get_arch(a.arch)
    a.img_size = spec.default_size if a.img_size is None else a.img_size
    a.dropout = spec.default_dropout if a.dropout is None else a.dropout
    try:
        check_input_size(a.img_size)
    except ValueError as exc:
        ap.error(f"--img-size: {exc}")
    if not 0.0 <= a.dropout < 1.0:
        ap.error(f"--dropout must be in [0, 1), got {a.dropout}")
    return a


@dataclass
class Trainer:
    """What one epoch of training needs; shared by the probe/finetune and the two_stage loops."""

    model: nn.Module
    train_dl: DataLoader[Any]
    val_dl: DataLoader[Any]
    device: torch.device
    weights: torch.Tensor
    classes: list[str]
    a: argparse.Namespace
    out: Path
    use_amp: bool
    gen: torch.Generator
    mix_rng: np.random.Generator
    train_ds: ImageDataset
    history: list[dict[str, Any]]
    t0: float
    best: dict[str, Any] | None = None

    def train_epoch(self, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, epoch: int, stage: int,
                    sched: torch.optim.lr_scheduler.LambdaLR | None) -> float:
        a, k = self.a, len(self.classes)
        set_trainable(self.model, stage)
        self.model.train()
        freeze_bn_of_frozen(self.model)
        self.train_ds.epoch = epoch
        running, seen = 0.0, 0
        bar = tqdm(self.train_dl, desc=f"epoch {epoch} stage {stage}", leave=False, disable=not a.verbose)
        for xb, yb in bar:
            x, y = xb.to(self.device), yb.to(self.device)
            target = F.one_hot(y, k).float()
            if a.label_smoothing > 0:
                target = target * (1 - a.label_smoothing) + a.label_smoothing / k
            x, target = mixup(x, target, a.mixup, self.mix_rng, self.gen)
            with torch.autocast(self.device.type, enabled=self.use_amp):
                logits = self.model(x)
            loss = soft_target_loss(logits, target, self.weights, a.focal_gamma)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
            scaler.step(opt)
            scaler.update()
            if sched is not None:
                sched.step()
            running += loss.item() * x.shape[0]
            seen += x.shape[0]
            bar.set_postfix(loss=f"{running / seen:.4f}")
        return running / max(1, seen)

    def validate(self, epoch: int, stage: int, train_loss: float, lr: float) -> bool:
        """Evaluate on val, log a history row, save best.pt when the selection metric improved; True if so."""
        vt, vp, vloss = predict(self.model, self.val_dl, self.device, "val", self.a.verbose, weights=self.weights)
        vm = {**classification_metrics(vt, vp, self.classes), "loss": vloss}
        row = {"epoch": epoch, "stage": stage, "lr": lr, "train_loss": train_loss, "val_loss": vloss,
               "val_top1": vm["top1"], "val_macro_f1": vm["macro_f1"], "seconds": round(time.time() - self.t0, 1)}
        self.history.append(row)
        if self.a.verbose:
            log.info("epoch %d stage %d lr %.2e loss %.4f val loss %.4f top1 %.4f macro-F1 %.4f", epoch, stage, lr,
                     train_loss, vloss, vm["top1"], vm["macro_f1"])
        if self.best is not None and not improved(self.a.select, vm, self.best):
            return False
        self.best = {**vm, "epoch": epoch, "stage": stage}
        spec = arch_of(self.model)
        torch.save({"arch": spec.name, "num_classes": len(self.classes), "classes": self.classes,
                    "input_size": self.a.img_size, "dropout": self.a.dropout, "state_dict": self.model.state_dict(),
                    "epoch": epoch, "stage": stage, "val_metrics": self.best, "args": vars(self.a)},
                   self.out / "best.pt")
        write_json(self.out / "val_metrics_best.json", self.best)
        return True


def improved(select: str, now: dict[str, Any], best: dict[str, Any]) -> bool:
    """Strictly better on the selection metric (higher macro-F1, or lower val loss)."""
    if select == "val_loss":
        return bool(now["loss"] < best["loss"])
    return bool(now["macro_f1"] > best["macro_f1"])


def make_optimizer(kind: str, groups: list[dict[str, Any]], weight_decay: float) -> torch.optim.Optimizer:
    if kind == "adam":
        return torch.optim.Adam(groups, weight_decay=weight_decay)
    return torch.optim.AdamW(groups, weight_decay=weight_decay)


def run_schedule(tr: Trainer) -> None:
    """probe / finetune: one optimizer (head and backbone LRs), warmup + cosine over all epochs."""
    a, model = tr.a, tr.model
    head_ids = {id(p) for m in head_modules(model) for p in m.parameters()}
    opt = make_optimizer(a.optimizer, [
        {"params": [p for p in model.parameters() if id(p) in head_ids], "lr": a.lr_head},
        {"params": [p for p in model.parameters() if id(p) not in head_ids], "lr": a.lr_backbone},
    ], a.weight_decay)
    steps_per_epoch = max(1, len(tr.train_dl))
    total = steps_per_epoch * a.epochs
    warm = int(a.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, total, warm))
    scaler = torch.amp.GradScaler("cuda", enabled=tr.use_amp)
    bad_epochs = 0
    for epoch, stage in enumerate(stage_schedule(a.mode, a.epochs), start=1):
        lr = float(opt.param_groups[0]["lr"])
        loss = tr.train_epoch(opt, scaler, epoch, stage, sched)
        if tr.validate(epoch, stage, loss, lr):
            bad_epochs = 0
            continue
        bad_epochs += 1
        if a.patience and bad_epochs >= a.patience:
            log.info("early stop at epoch %d: val %s has not improved for %d epochs", epoch, a.select, bad_epochs)
            break


def run_two_stage(tr: Trainer) -> None:
    """Seed 003: stage 1 trains the head on the frozen backbone at --lr-head; stage 2 starts from the best
    weights so far and trains the last blocks + head at --stage2-lr-factor x --lr-head. Each stage has its own
    optimizer, ReduceLROnPlateau on the val loss (factor 0.1) and early stopping (--patience, on --select)."""
    a, model = tr.a, tr.model
    epoch = 0
    for stage, max_epochs, lr in ((1, a.stage_epochs[0], a.lr_head), (2, a.stage_epochs[1],
                                                                      a.lr_head * a.stage2_lr_factor)):
        if stage == 2 and (tr.out / "best.pt").is_file():
            model.load_state_dict(torch.load(tr.out / "best.pt", map_location=tr.device,
                                             weights_only=False)["state_dict"])
        set_trainable(model, stage)
        opt = make_optimizer(a.optimizer, [{"params": [p for p in model.parameters() if p.requires_grad],
                                            "lr": lr}], a.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1,
                                                             patience=a.plateau_patience)
        scaler = torch.amp.GradScaler("cuda", enabled=tr.use_amp)
        bad_epochs = 0
        for _ in range(max_epochs):
            epoch += 1
            cur_lr = float(opt.param_groups[0]["lr"])
            loss = tr.train_epoch(opt, scaler, epoch, stage, None)
            better = tr.validate(epoch, stage, loss, cur_lr)
            plateau.step(tr.history[-1]["val_loss"])
            bad_epochs = 0 if better else bad_epochs + 1
            if a.patience and bad_epochs >= a.patience:
                log.info("stage %d: early stop at epoch %d (val %s not improved for %d epochs)", stage, epoch,
                         a.select, bad_epochs)
                break


def run(a: argparse.Namespace) -> dict[str, Any]:
    seed_everything(a.seed)
    if a.threads:
        torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = load_splits(a)
    classes = resolve_classes(splits.train, parse_classes(a.classes))
    check_labels(splits.val, classes, "val")
    check_labels(splits.test, classes, "test")
    write_json(out / "classes.json", classes)
    k = len(classes)
    if k < 2:
        raise SystemExit(f"the training split has {k} label(s) {classes}: a classifier needs at least 2")
    device = torch.device(a.device)
    use_amp = device.type == "cuda"

    aug = None if a.no_augment else AugmentConfig()
    train_ds = ImageDataset(splits.train, classes, aug, a.seed, input_size=a.img_size)
    val_ds = ImageDataset(splits.val, classes, input_size=a.img_size)
    test_ds = ImageDataset(splits.test, classes, input_size=a.img_size)
    counts = [Counter(train_ds.targets())[i] for i in range(k)]
    log.info("%s at %dx%d, %d classes %s; train counts %s; val %d; test %d", a.arch, a.img_size, a.img_size, k,
             classes, counts, len(val_ds), len(test_ds))

    gen = torch.Generator().manual_seed(a.seed)
    mix_rng = np.random.default_rng(a.seed)
    sampler = None
    if a.oversample:
        sample_w = [1.0 / counts[t] for t in train_ds.targets()]
        sampler = WeightedRandomSampler(sample_w, num_samples=len(train_ds), replacement=True, generator=gen)
    loader_kw: dict[str, Any] = {"batch_size": a.batch, "num_workers": a.workers, "pin_memory": use_amp,
                                 "persistent_workers": a.workers > 0}
    train_dl = DataLoader(train_ds, shuffle=sampler is None, sampler=sampler, generator=gen, drop_last=False,
                          **loader_kw)
    val_dl = DataLoader(val_ds, shuffle=False, **loader_kw)
    test_dl = DataLoader(test_ds, shuffle=False, **loader_kw)

    model = build_classifier(a.arch, k, a.dropout)
    if a.init:
        load_init(model, Path(a.init), k)
    elif a.mode in ("probe", "two_stage"):
        log.warning("%s without --init: the backbone is randomly initialised, and its frozen (eval-mode BatchNorm) "
                    "features are near zero, so the head-only stage learns little more than the class prior. Give "
                    "--init with ImageNet (or your own) weights, or use --mode finetune.", a.mode)
    model.to(device)
    weights = torch.tensor(class_weights(counts, a.class_weights), dtype=torch.float32, device=device)
    tr = Trainer(model, train_dl, val_dl, device, weights, classes, a, out, use_amp, gen, mix_rng, train_ds, [],
                 time.time())
    if a.mode == "two_stage":
        run_two_stage(tr)
    else:
        run_schedule(tr)
    write_json(out / "history.json", tr.history)

    ckpt = torch.load(out / "best.pt", map_location=device, weights_only=False)
    model.load_state_dict(ckpt["state_dict"])
    tt, tp, tloss = predict(model, test_dl, device, "test", a.verbose, weights=weights)
    tm = {**classification_metrics(tt, tp, classes), "loss": tloss, "best_epoch": ckpt["epoch"]}
    write_json(out / "test_metrics.json", tm)
    with (out / "test_preds.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "true", "pred"])
        for s, t, p in zip(test_ds.samples, tt, tp, strict=True):
            writer.writerow([s.display_path, classes[t], classes[p]])
    log.info("best epoch %d: val macro-F1 %.4f; test top1 %.4f macro-F1 %.4f (%s)", ckpt["epoch"],
             ckpt["val_metrics"]["macro_f1"], tm["top1"], tm["macro_f1"], out)
    return tm


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run(a)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
